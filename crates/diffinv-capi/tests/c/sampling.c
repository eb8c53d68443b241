/* A C caller of diffinv: full sampling loops on the CPU backend over its own
 * arrays (printed as the bits of every final value, which tests/c_program.rs
 * compares with the Rust API's loop), then calls with bad arguments, each of
 * which must return an error status and a message. Exit status 0 iff every
 * call behaved as stated. */
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 2
#define CHANNELS 3
#define SIDE 8
#define N (BATCH * CHANNELS * SIDE * SIDE)

static const size_t DIMS[4] = {BATCH, CHANNELS, SIDE, SIDE};

/* The sample before the first step: the same formula as the Rust test. */
static float x0(size_t i) { return (float)((i * 37) % 101) / 50.0f - 1.0f; }

/* The "network": a fixed function of x. */
static float net(float x, size_t i) { return 0.6f * x + 0.05f * (float)((int)(i % 13) - 6); }

static void configure(int solver, DiffinvSolverConfig *so) {
    check_ok(diffinv_solver_config_default(so), "solver defaults");
    so->steps = 8;
    switch (solver) {
    case 0: so->solver = DIFFINV_SOLVER_DPMPP; so->order = 3; break;
    case 1: so->solver = DIFFINV_SOLVER_UNIPC; break;
    default: so->solver = DIFFINV_SOLVER_DDIM; so->eta = 0.5; break;
    }
}

/* One full loop; prints "<dtype> <solver>" and the bits of the final x as f32. */
static void sample(const DiffinvBackend *backend, int solver, uint32_t dtype) {
    DiffinvScheduleConfig sc;
    DiffinvSolverConfig so;
    DiffinvPlan *plan = NULL;
    DiffinvRun *run = NULL;
    size_t steps = 0;
    static float xf[N], ef[N];
    static uint16_t xh[N], eh[N];
    check_ok(diffinv_schedule_config_default(&sc), "schedule defaults");
    configure(solver, &so);
    check_ok(diffinv_plan_new(&sc, &so, &plan), "plan");
    check_ok(diffinv_plan_steps(plan, &steps), "plan steps");
    check_ok(diffinv_run_new(backend, plan, DIMS, 4, dtype, 11, &run), "run");
    for (size_t i = 0; i < N; i++) xf[i] = x0(i);
    if (dtype == DIFFINV_DTYPE_F16) check_ok(diffinv_f32_to_f16(xf, xh, N), "to f16");
    for (size_t k = 0; k < steps; k++) {
        double t;
        check_ok(diffinv_plan_timestep(plan, k, &t), "timestep");
        if (dtype == DIFFINV_DTYPE_F16) {
            check_ok(diffinv_f16_to_f32(xh, xf, N), "to f32");
            for (size_t i = 0; i < N; i++) ef[i] = net(xf[i], i);
            check_ok(diffinv_f32_to_f16(ef, eh, N), "to f16");
            check_ok(diffinv_run_step(run, k, xh, N, eh, N), "step");
        } else {
            for (size_t i = 0; i < N; i++) ef[i] = net(xf[i], i);
            check_ok(diffinv_run_step(run, k, xf, N, ef, N), "step");
        }
    }
    if (dtype == DIFFINV_DTYPE_F16) check_ok(diffinv_f16_to_f32(xh, xf, N), "to f32");
    printf("%s %d", dtype == DIFFINV_DTYPE_F16 ? "f16" : "f32", solver);
    for (size_t i = 0; i < N; i++) {
        uint32_t bits;
        memcpy(&bits, &xf[i], sizeof bits);
        printf(" %08x", (unsigned)bits);
    }
    printf("\n");
    diffinv_run_free(run);
    diffinv_plan_free(plan);
}

static void bad_arguments(const DiffinvBackend *backend) {
    DiffinvScheduleConfig sc;
    DiffinvSolverConfig so;
    DiffinvPlan *plan = NULL;
    DiffinvRun *run = NULL;
    double t;
    static float x[N + 1], e[N];
    check_ok(diffinv_schedule_config_default(&sc), "schedule defaults");
    configure(0, &so);

    expect(diffinv_backend_cpu_new(NULL), DIFFINV_STATUS_NULL_POINTER, "null backend out");
    expect(diffinv_plan_new(NULL, &so, &plan), DIFFINV_STATUS_NULL_POINTER, "null schedule");
    so.solver = 99;
    expect(diffinv_plan_new(&sc, &so, &plan), DIFFINV_STATUS_INVALID_ARGUMENT, "unknown solver");
    configure(0, &so);
    so.steps = 0;
    expect(diffinv_plan_new(&sc, &so, &plan), DIFFINV_STATUS_INVALID_ARGUMENT, "zero steps");
    configure(0, &so);
    sc.train_steps = 1;
    expect(diffinv_plan_new(&sc, &so, &plan), DIFFINV_STATUS_INVALID_ARGUMENT, "one train step");
    check_ok(diffinv_schedule_config_default(&sc), "schedule defaults");
    check_ok(diffinv_plan_new(&sc, &so, &plan), "plan");
    expect(diffinv_plan_timestep(plan, 8, &t), DIFFINV_STATUS_INVALID_ARGUMENT, "timestep past the end");
    expect(diffinv_run_new(backend, plan, DIMS, 4, 7, 0, &run), DIFFINV_STATUS_INVALID_ARGUMENT, "unknown dtype");
    expect(diffinv_run_new(backend, plan, DIMS, 0, DIFFINV_DTYPE_F32, 0, &run), DIFFINV_STATUS_INVALID_ARGUMENT, "rank 0");
    expect(diffinv_run_new(NULL, plan, DIMS, 4, DIFFINV_DTYPE_F32, 0, &run), DIFFINV_STATUS_NULL_POINTER, "null backend");
    check_ok(diffinv_run_new(backend, plan, DIMS, 4, DIFFINV_DTYPE_F32, 0, &run), "run");
    for (size_t i = 0; i < N; i++) x[i] = x0(i), e[i] = net(x0(i), i);
    expect(diffinv_run_step(NULL, 0, x, N, e, N), DIFFINV_STATUS_NULL_POINTER, "null run");
    expect(diffinv_run_step(run, 0, NULL, N, e, N), DIFFINV_STATUS_NULL_POINTER, "null x");
    expect(diffinv_run_step(run, 0, x, N, NULL, N), DIFFINV_STATUS_NULL_POINTER, "null model_out");
    expect(diffinv_run_step(run, 0, x, N - 1, e, N), DIFFINV_STATUS_LENGTH_MISMATCH, "short x");
    expect(diffinv_run_step(run, 0, x, N, e, N + 1), DIFFINV_STATUS_LENGTH_MISMATCH, "long model_out");
    expect(diffinv_run_step(run, 8, x, N, e, N), DIFFINV_STATUS_INVALID_ARGUMENT, "step past the end");
    expect(diffinv_run_step(run, 0, x, N, x, N), DIFFINV_STATUS_INVALID_ARGUMENT, "model_out aliasing x");
    expect(diffinv_run_step(run, 0, (char *)x + 1, N, e, N), DIFFINV_STATUS_INVALID_ARGUMENT, "misaligned x");
    for (size_t i = 0; i < N; i++) {
        if (x[i] != x0(i)) {
            fprintf(stderr, "a failed call wrote x[%zu]\n", i);
            failures++;
            break;
        }
    }
    /* After all that, a good call still works. */
    check_ok(diffinv_run_step(run, 0, x, N, e, N), "step after bad calls");
    diffinv_run_free(run);
    diffinv_plan_free(plan);
    diffinv_run_free(NULL);
    diffinv_plan_free(NULL);
    diffinv_backend_free(NULL);
}

int main(void) {
    DiffinvBackend *backend = NULL;
    check_ok(diffinv_backend_cpu_new(&backend), "backend");
    for (int solver = 0; solver < 3; solver++) {
        sample(backend, solver, DIFFINV_DTYPE_F32);
        sample(backend, solver, DIFFINV_DTYPE_F16);
    }
    bad_arguments(backend);
    diffinv_backend_free(backend);
    return failures == 0 ? 0 : 1;
}
