/*
 * programs.c - the single operations (project, clamp, set projection,
 * steer) as one-step programs of axs_apply_, with the names their arguments
 * have in messages. Both halves of the core build their single-operation
 * entry points from these (cpu.c for axs_clamp_, cuda.cu for
 * axs_clamp_cuda_, ...), so the two cannot drift apart.
 *
 * Deliberately not here: any check (validate.c) or arithmetic (the kernels).
 */
#include <string.h>

#include "internal.h"

const axs_record axs_no_record = {{NULL, 0, 0}, {NULL, 0, 0}, {NULL, 0, 0}, NULL, 0};
const axs_fout axs_no_fout = {NULL, 0, 0};

static axs_one_step one_step(axs_op op, const float *dir, axs_fin a, axs_fin b) {
  axs_one_step s;
  memset(&s, 0, sizeof s);
  s.step.op = op;
  s.step.dir = dir;
  s.step.a = a;
  s.step.b = b;
  return s;
}

static const axs_fin no_fin = {NULL, 0, 0};

axs_one_step axs_project_program(const float *u, axs_fout out) {
  axs_one_step s = one_step(AXS_PROJECT, u, no_fin, no_fin);
  s.step.p_before = out;
  s.names.dir = "u";
  s.names.p_before = "out";
  return s;
}

axs_one_step axs_clamp_program(const float *u, axs_fin lo, axs_fin hi, axs_fout p_before,
                               axs_fout p_after, axs_bout changed) {
  axs_one_step s = one_step(AXS_CLAMP, u, lo, hi);
  s.step.p_before = p_before;
  s.step.p_after = p_after;
  s.step.changed = changed;
  s.names.dir = "u";
  s.names.a = "lo";
  s.names.b = "hi";
  s.names.p_before = "p_before";
  s.names.p_after = "p_after";
  s.names.changed = "changed";
  return s;
}

axs_one_step axs_set_projection_program(const float *u, axs_fin target, axs_fout p_before) {
  axs_one_step s = one_step(AXS_SET, u, target, no_fin);
  s.step.p_before = p_before;
  s.names.dir = "u";
  s.names.a = "target";
  s.names.p_before = "p_before";
  return s;
}

axs_one_step axs_steer_program(const float *w, axs_fin alpha) {
  axs_one_step s = one_step(AXS_STEER, w, alpha, no_fin);
  s.names.dir = "w";
  s.names.a = "alpha";
  return s;
}
