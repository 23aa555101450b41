/*
 * internal.h - what the CPU and CUDA halves of the core share: the error
 * buffer, the host-side validation of a call, and the names used in messages.
 * Not installed, not part of the public contract.
 */
#ifndef AXIS_STEER_INTERNAL_H
#define AXIS_STEER_INTERNAL_H

#include "../axis_steer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* How the arguments of the public entry point are called, so that a message
 * names what the caller passed ("u", "lo") rather than "steps[0].dir". A NULL
 * table means axs_apply_'s own names (dirs[k], a[k], b[k]). */
typedef struct {
  const char *dir, *a, *b, *p_before, *p_after, *changed;
} axs_names;

/* Records a message for axs_last_error() and returns status. */
axs_status axs_fail(axs_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

/* Clears the message of the calling thread. */
void axs_clear_error(void);

size_t axs_dtype_size(axs_dtype dtype);
const char *axs_dtype_name(axs_dtype dtype);

/* Everything about a call that can be checked without reading device data:
 * sizes, strides, enums, missing pointers, overlaps. */
axs_status axs_check_call(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask,
                          axs_record rec, const axs_names *names);

/* The checks that read the values (direction norms, per-row lo <= hi);
 * host memory only. */
axs_status axs_check_values(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask,
                            const axs_names *names);

/* Sum of squares of a float32 vector, vectorised like the row dot products
 * (cpu.c). */
float axs_sumsq_f32(const float *v, int64_t d);

/* The CPU engine behind every public CPU entry point. */
axs_status axs_apply_named(axs_rows h, const axs_step *steps, int n_steps, axs_bin mask,
                           axs_record rec, int n_threads, const axs_names *names);

#ifdef __cplusplus
}
#endif

#endif
