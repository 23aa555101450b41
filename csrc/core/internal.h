/*
 * internal.h - what the CPU and CUDA halves of the core share: the error
 * buffer, the host-side validation of a call, and the single operations as
 * one-step programs. Not installed, not part of the public contract.
 */
#ifndef AXIS_STEER_INTERNAL_H
#define AXIS_STEER_INTERNAL_H

#include <stddef.h>

#include "../axis_steer.h"

#ifdef __cplusplus
extern "C" {
#endif

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
 * sizes and byte extents (overflow-checked), strides, enums, missing
 * pointers, overlaps. names may be NULL (axs_names). */
axs_status axs_check_call(axs_rows h, const axs_latch *latches, int n_latches,
                          const axs_step *steps, int n_steps, axs_bin mask, axs_record rec,
                          const axs_names *names);

/* The checks that read the values (direction norms, per-row lo <= hi, mask
 * bytes 0 / 1, latch parameters); host memory only, after axs_check_call. */
axs_status axs_check_values(axs_rows h, const axs_latch *latches, int n_latches,
                            const axs_step *steps, int n_steps, axs_bin mask,
                            const axs_names *names);

/* Sum of squares of a float32 vector, vectorised like the row dot products
 * (cpu.c). */
float axs_sumsq_f32(const float *v, int64_t d);

/* ---- the single operations as one-step programs (programs.c) -------------
 * Both halves run axs_project, axs_clamp_, ... as axs_apply_ (or
 * axs_apply_cuda_) of the step built here, with these names in messages. */

typedef struct {
  axs_step step;
  axs_names names;
} axs_one_step;

extern const axs_record axs_no_record;
extern const axs_fout axs_no_fout;

axs_one_step axs_project_program(const float *u, axs_fout out);
axs_one_step axs_clamp_program(const float *u, axs_fin lo, axs_fin hi, axs_fout p_before,
                               axs_fout p_after, axs_bout changed);
axs_one_step axs_set_projection_program(const float *u, axs_fin target, axs_fout p_before);
axs_one_step axs_steer_program(const float *w, axs_fin alpha);

#ifdef __cplusplus
}
#endif

#endif
