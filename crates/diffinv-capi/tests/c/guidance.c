/* A C caller of diffinv's conditional samplers: full C-ΠGDM loops (the
 * Jacobian dropped, and the exact product computed here) and full DDS loops on
 * the CPU backend, for inpainting and 2× average-pool super-resolution, in f32
 * and f16. Each prints the bits of its final x, which tests/c_program.rs
 * compares with the Rust API's loops; then calls with bad arguments, each of
 * which must return an error status and a message. Exit status 0 iff every
 * call behaved as stated. */
#include "check.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BATCH 2
#define CHANNELS 3
#define SIDE 8
#define ITEM (CHANNELS * SIDE * SIDE)
#define N (BATCH * ITEM)
#define DDS_STEPS 8
#define DDS_SEED 5

/* The same formulas as the Rust side of the test (tests/c_program.rs). */
static float start(size_t i) { return (float)((i * 37) % 101) / 50.0f - 1.0f; }
static float measured(size_t i) { return (float)((i * 53) % 97) / 48.0f - 1.0f; }
static float observed(size_t i) { return (i * 7) % 5 < 3 ? 1.0f : 0.0f; }
/* The "network": ε = 0.6·x + a fixed offset, so J_ε = 0.6·I. */
static float net(float x, size_t i) { return 0.6f * x + 0.05f * (float)((int)(i % 13) - 6); }

/* A tensor of the caller's: f32 values, and their f16 bits for f16 runs. */
typedef struct {
    uint32_t dtype;
    size_t len;
    float f[N];
    uint16_t h[N];
} Buf;

static void *data(Buf *b) { return b->dtype == DIFFINV_DTYPE_F16 ? (void *)b->h : (void *)b->f; }

/* After writing b->f: the f16 copy (round to nearest even). */
static void store(Buf *b) {
    if (b->dtype == DIFFINV_DTYPE_F16) check_ok(diffinv_f32_to_f16(b->f, b->h, b->len), "to f16");
}

/* After the library wrote data(b): the f32 view. */
static void load(Buf *b) {
    if (b->dtype == DIFFINV_DTYPE_F16) check_ok(diffinv_f16_to_f32(b->h, b->f, b->len), "to f32");
}

static void fill(Buf *b, uint32_t dtype, size_t len, float (*f)(size_t)) {
    b->dtype = dtype;
    b->len = len;
    for (size_t i = 0; i < len; i++) b->f[i] = f(i);
    store(b);
}

static void print_bits(const char *tag, Buf *x) {
    load(x);
    printf("%s %s", tag, x->dtype == DIFFINV_DTYPE_F16 ? "f16" : "f32");
    for (size_t i = 0; i < x->len; i++) {
        uint32_t bits;
        memcpy(&bits, &x->f[i], sizeof bits);
        printf(" %08x", (unsigned)bits);
    }
    printf("\n");
}

/* op 0: inpainting (kept entries), 1: 2× average pooling. */
static DiffinvOperator *make_operator(const DiffinvBackend *backend, int op) {
    static float mask[ITEM];
    DiffinvOperator *out = NULL;
    for (size_t i = 0; i < ITEM; i++) mask[i] = observed(i);
    if (op == 0)
        check_ok(diffinv_operator_inpaint_new(backend, CHANNELS, SIDE, SIDE, mask, ITEM, true, &out),
                 "inpaint operator");
    else
        check_ok(diffinv_operator_avg_pool_new(backend, CHANNELS, SIDE, SIDE, 2, &out), "pool operator");
    return out;
}

static size_t y_len_of(const DiffinvOperator *op) {
    size_t x_item = 0, y_item = 0;
    check_ok(diffinv_operator_item_lens(op, &x_item, &y_item), "item lens");
    if (x_item != ITEM) {
        fprintf(stderr, "x item %zu, want %d\n", x_item, ITEM);
        exit(2);
    }
    return BATCH * y_item;
}

/* ε of the network at the run's current input x, into eps. */
static void network(Buf *x, Buf *eps) {
    load(x);
    for (size_t i = 0; i < N; i++) eps->f[i] = net(x->f[i], i);
    store(eps);
}

/* One C-ΠGDM loop; jacobian 0: dropped, 1: exact (g = 0.6·m). */
static void guided(const DiffinvBackend *backend, int op_kind, int jacobian, uint32_t dtype) {
    static Buf y, z, x, eps, m, g;
    DiffinvGuidanceConfig config;
    DiffinvGuidancePlan *plan = NULL;
    DiffinvGuidedRun *run = NULL;
    DiffinvModelPoint point;
    size_t steps = 0;
    DiffinvOperator *op = make_operator(backend, op_kind);
    fill(&y, dtype, y_len_of(op), measured);
    fill(&z, dtype, N, start);
    fill(&x, dtype, N, start);
    eps = x, m = x, g = x;
    check_ok(diffinv_guidance_config_default(&config), "guidance defaults");
    check_ok(diffinv_guidance_plan_new(&config, &plan), "guidance plan");
    check_ok(diffinv_guidance_plan_steps(plan, &steps), "guidance steps");
    check_ok(diffinv_guided_run_new(backend, plan, op, data(&y), y.len, data(&z), N, dtype, BATCH, &run),
             "guided run");
    for (size_t k = 0; k < steps; k++) {
        check_ok(diffinv_guided_run_point(run, &point), "guided point");
        if (point.step != k || point.steps != steps || !(point.alpha > 0.0)) {
            fprintf(stderr, "guided point %zu: step %zu of %zu\n", k, point.step, point.steps);
            exit(2);
        }
        check_ok(diffinv_guided_run_read_x(run, data(&x), N), "guided read x");
        network(&x, &eps);
        if (jacobian) {
            check_ok(diffinv_guided_run_residual(run, data(&eps), N, data(&m), N), "residual");
            load(&m);
            for (size_t i = 0; i < N; i++) g.f[i] = 0.6f * m.f[i];
            store(&g);
            check_ok(diffinv_guided_run_update(run, data(&eps), N, data(&g), N), "update");
        } else {
            check_ok(diffinv_guided_run_update(run, data(&eps), N, NULL, 0), "update");
        }
    }
    check_ok(diffinv_guided_run_read_x(run, data(&x), N), "guided read x");
    char tag[32];
    snprintf(tag, sizeof tag, "guided %d %d", op_kind, jacobian);
    print_bits(tag, &x);
    diffinv_guided_run_free(run);
    diffinv_guidance_plan_free(plan);
    diffinv_operator_free(op);
}

static void dds_plan(DiffinvDdsPlan **plan) {
    DiffinvScheduleConfig sc;
    DiffinvDdsConfig config;
    check_ok(diffinv_schedule_config_default(&sc), "schedule defaults");
    check_ok(diffinv_dds_config_default(&config), "dds defaults");
    config.steps = DDS_STEPS;
    check_ok(diffinv_dds_plan_new(&sc, &config, plan), "dds plan");
}

/* One DDS loop with the noise dds_sample draws for DDS_SEED. */
static void dds(const DiffinvBackend *backend, int op_kind, uint32_t dtype) {
    static Buf y, z, x, eps, noise;
    DiffinvDdsPlan *plan = NULL;
    DiffinvDdsRun *run = NULL;
    DiffinvModelPoint point;
    size_t steps = 0, noisy = 0;
    DiffinvOperator *op = make_operator(backend, op_kind);
    fill(&y, dtype, y_len_of(op), measured);
    fill(&z, dtype, N, start);
    fill(&x, dtype, N, start);
    eps = x, noise = x;
    dds_plan(&plan);
    check_ok(diffinv_dds_plan_steps(plan, &steps), "dds steps");
    check_ok(diffinv_dds_run_new(backend, plan, op, data(&y), y.len, data(&z), N, dtype, BATCH, &run),
             "dds run");
    for (size_t k = 0; k < steps; k++) {
        bool needs = false;
        check_ok(diffinv_dds_run_point(run, &point), "dds point");
        if (point.step != k || point.steps != steps) {
            fprintf(stderr, "dds point %zu: step %zu of %zu\n", k, point.step, point.steps);
            exit(2);
        }
        check_ok(diffinv_dds_run_read_x(run, data(&x), N), "dds read x");
        network(&x, &eps);
        check_ok(diffinv_dds_run_tweedie(run, data(&eps), N), "tweedie");
        check_ok(diffinv_dds_run_consistency(run), "consistency");
        check_ok(diffinv_dds_run_needs_noise(run, &needs), "needs noise");
        if (needs) {
            noisy++;
            check_ok(diffinv_normal_noise(backend, DDS_SEED, (uint32_t)k, data(&noise), N, dtype), "noise");
            check_ok(diffinv_dds_run_renoise(run, data(&eps), N, data(&noise), N), "renoise");
        } else {
            check_ok(diffinv_dds_run_renoise(run, data(&eps), N, NULL, 0), "renoise");
        }
    }
    if (noisy == 0 || noisy == steps) {
        fprintf(stderr, "dds: %zu of %zu steps drew noise (the last ones draw none)\n", noisy, steps);
        exit(2);
    }
    check_ok(diffinv_dds_run_read_x(run, data(&x), N), "dds read x");
    char tag[32];
    snprintf(tag, sizeof tag, "dds %d", op_kind);
    print_bits(tag, &x);
    diffinv_dds_run_free(run);
    diffinv_dds_plan_free(plan);
    diffinv_operator_free(op);
}

static void bad_operators(const DiffinvBackend *backend) {
    static float mask[ITEM];
    DiffinvOperator *op = NULL;
    size_t x_item = 0;
    for (size_t i = 0; i < ITEM; i++) mask[i] = observed(i);
    expect(diffinv_operator_avg_pool_new(NULL, CHANNELS, SIDE, SIDE, 2, &op), DIFFINV_STATUS_NULL_POINTER,
           "operator on a null backend");
    expect(diffinv_operator_inpaint_new(backend, CHANNELS, SIDE, SIDE, NULL, ITEM, true, &op),
           DIFFINV_STATUS_NULL_POINTER, "null mask");
    expect(diffinv_operator_inpaint_new(backend, CHANNELS, SIDE, SIDE, mask, ITEM - 1, true, &op),
           DIFFINV_STATUS_LENGTH_MISMATCH, "short mask");
    mask[3] = 0.5f;
    expect(diffinv_operator_inpaint_new(backend, CHANNELS, SIDE, SIDE, mask, ITEM, true, &op),
           DIFFINV_STATUS_INVALID_ARGUMENT, "mask entry 0.5");
    expect(diffinv_operator_avg_pool_new(backend, CHANNELS, SIDE, SIDE, 3, &op), DIFFINV_STATUS_INVALID_ARGUMENT,
           "pooling factor 3 of 8");
    expect(diffinv_operator_colorize_new(backend, 2, SIDE, SIDE, 0.3, 0.6, 0.1, &op),
           DIFFINV_STATUS_INVALID_ARGUMENT, "colorization of 2 channels");
    expect(diffinv_operator_gaussian_blur_new(backend, CHANNELS, SIDE, SIDE, 0.0, 2, &op),
           DIFFINV_STATUS_INVALID_ARGUMENT, "blur sigma 0");
    expect(diffinv_operator_blur_new(backend, CHANNELS, SIDE, SIDE, NULL, 3, &op), DIFFINV_STATUS_NULL_POINTER,
           "null blur taps");
    expect(diffinv_operator_item_lens(NULL, &x_item, &x_item), DIFFINV_STATUS_NULL_POINTER, "item lens of null");
    if (op != NULL) {
        fprintf(stderr, "a failed constructor wrote *out\n");
        failures++;
    }
    /* The constructors not used by the loops make working operators. */
    static const double taps[3] = {0.25, 0.5, 0.25};
    check_ok(diffinv_operator_blur_new(backend, CHANNELS, SIDE, SIDE, taps, 3, &op), "blur");
    diffinv_operator_free(op);
    check_ok(diffinv_operator_gaussian_blur_new(backend, CHANNELS, SIDE, SIDE, 1.0, 2, &op), "gaussian blur");
    diffinv_operator_free(op);
    check_ok(diffinv_operator_bicubic_new(backend, CHANNELS, SIDE, SIDE, 2, &op), "bicubic");
    diffinv_operator_free(op);
    check_ok(diffinv_operator_colorize_new(backend, CHANNELS, SIDE, SIDE, 0.3, 0.6, 0.1, &op), "colorize");
    diffinv_operator_free(op);
    diffinv_operator_free(NULL);
}

static void bad_guided(const DiffinvBackend *backend) {
    static Buf y, z, x;
    DiffinvGuidanceConfig config;
    DiffinvGuidancePlan *plan = NULL;
    DiffinvGuidedRun *run = NULL;
    DiffinvBackend *other = NULL;
    DiffinvOperator *foreign = NULL;
    DiffinvModelPoint point;
    size_t steps = 0;
    DiffinvOperator *op = make_operator(backend, 1);
    const uint32_t f32 = DIFFINV_DTYPE_F32;
    fill(&y, f32, y_len_of(op), measured);
    fill(&z, f32, N, start);
    fill(&x, f32, N, start);

    expect(diffinv_guidance_plan_new(NULL, &plan), DIFFINV_STATUS_NULL_POINTER, "null guidance config");
    check_ok(diffinv_guidance_config_default(&config), "guidance defaults");
    config.method = 9;
    expect(diffinv_guidance_plan_new(&config, &plan), DIFFINV_STATUS_INVALID_ARGUMENT, "unknown method");
    check_ok(diffinv_guidance_config_default(&config), "guidance defaults");
    config.t_end = config.t_start;
    expect(diffinv_guidance_plan_new(&config, &plan), DIFFINV_STATUS_INVALID_ARGUMENT, "t_end = t_start");
    check_ok(diffinv_guidance_config_default(&config), "guidance defaults");
    config.steps = 0;
    expect(diffinv_guidance_plan_new(&config, &plan), DIFFINV_STATUS_INVALID_ARGUMENT, "zero guidance steps");
    check_ok(diffinv_guidance_config_default(&config), "guidance defaults");
    check_ok(diffinv_guidance_plan_new(&config, &plan), "guidance plan");
    check_ok(diffinv_guidance_plan_steps(plan, &steps), "guidance steps");

    expect(diffinv_guided_run_new(backend, plan, NULL, y.f, y.len, z.f, N, f32, BATCH, &run),
           DIFFINV_STATUS_NULL_POINTER, "guided run without operator");
    expect(diffinv_guided_run_new(backend, plan, op, y.f, y.len - 1, z.f, N, f32, BATCH, &run),
           DIFFINV_STATUS_LENGTH_MISMATCH, "short y");
    expect(diffinv_guided_run_new(backend, plan, op, y.f, y.len, z.f, N, 7, BATCH, &run),
           DIFFINV_STATUS_INVALID_ARGUMENT, "unknown guided dtype");
    y.f[5] = NAN;
    expect(diffinv_guided_run_new(backend, plan, op, y.f, y.len, z.f, N, f32, BATCH, &run),
           DIFFINV_STATUS_INVALID_ARGUMENT, "NaN in y");
    y.f[5] = measured(5);
    check_ok(diffinv_backend_cpu_new(&other), "second backend");
    check_ok(diffinv_operator_avg_pool_new(other, CHANNELS, SIDE, SIDE, 2, &foreign), "foreign operator");
    expect(diffinv_guided_run_new(backend, plan, foreign, y.f, y.len, z.f, N, f32, BATCH, &run),
           DIFFINV_STATUS_INVALID_ARGUMENT, "operator of another backend");
    diffinv_operator_free(foreign);
    diffinv_backend_free(other);
    if (run != NULL) {
        fprintf(stderr, "a failed guided_run_new wrote *out\n");
        failures++;
    }

    check_ok(diffinv_guided_run_new(backend, plan, op, y.f, y.len, z.f, N, f32, BATCH, &run), "guided run");
    expect(diffinv_guided_run_read_x(run, x.f, N - 1), DIFFINV_STATUS_LENGTH_MISMATCH, "short read of x");
    expect(diffinv_guided_run_update(run, x.f, N + 1, NULL, 0), DIFFINV_STATUS_LENGTH_MISMATCH, "long eps");
    expect(diffinv_guided_run_update(run, x.f, N, x.f, N - 1), DIFFINV_STATUS_LENGTH_MISMATCH, "short g");
    expect(diffinv_guided_run_update(NULL, x.f, N, NULL, 0), DIFFINV_STATUS_NULL_POINTER, "update of null run");
    expect(diffinv_guided_run_residual(run, x.f, N, NULL, N), DIFFINV_STATUS_NULL_POINTER, "residual into null");
    expect(diffinv_guided_run_update(run, (char *)x.f + 2, N, NULL, 0), DIFFINV_STATUS_INVALID_ARGUMENT,
           "misaligned eps");
    for (size_t k = 0; k < steps; k++) check_ok(diffinv_guided_run_update(run, x.f, N, NULL, 0), "update");
    expect(diffinv_guided_run_update(run, x.f, N, NULL, 0), DIFFINV_STATUS_INVALID_ARGUMENT,
           "update past the end");
    expect(diffinv_guided_run_residual(run, x.f, N, z.f, N), DIFFINV_STATUS_INVALID_ARGUMENT,
           "residual past the end");
    expect(diffinv_guided_run_point(run, &point), DIFFINV_STATUS_INVALID_ARGUMENT, "point past the end");
    check_ok(diffinv_guided_run_read_x(run, x.f, N), "read x after the end");
    diffinv_guided_run_free(run);
    diffinv_guided_run_free(NULL);
    diffinv_guidance_plan_free(plan);
    diffinv_guidance_plan_free(NULL);
    diffinv_operator_free(op);
}

static void bad_dds(const DiffinvBackend *backend) {
    static Buf y, z, x;
    DiffinvScheduleConfig sc;
    DiffinvDdsConfig config;
    DiffinvDdsPlan *plan = NULL;
    DiffinvDdsRun *run = NULL;
    DiffinvModelPoint point;
    size_t steps = 0;
    bool needs = false;
    DiffinvOperator *op = make_operator(backend, 0);
    const uint32_t f32 = DIFFINV_DTYPE_F32;
    fill(&y, f32, y_len_of(op), measured);
    fill(&z, f32, N, start);
    fill(&x, f32, N, start);
    check_ok(diffinv_schedule_config_default(&sc), "schedule defaults");

    expect(diffinv_dds_plan_new(&sc, NULL, &plan), DIFFINV_STATUS_NULL_POINTER, "null dds config");
    check_ok(diffinv_dds_config_default(&config), "dds defaults");
    config.eta = 1.5;
    expect(diffinv_dds_plan_new(&sc, &config, &plan), DIFFINV_STATUS_INVALID_ARGUMENT, "eta 1.5");
    check_ok(diffinv_dds_config_default(&config), "dds defaults");
    config.cg_iterations = 0;
    expect(diffinv_dds_plan_new(&sc, &config, &plan), DIFFINV_STATUS_INVALID_ARGUMENT, "zero CG iterations");
    check_ok(diffinv_dds_config_default(&config), "dds defaults");
    config.steps = 2000;
    expect(diffinv_dds_plan_new(&sc, &config, &plan), DIFFINV_STATUS_INVALID_ARGUMENT, "more steps than training");
    dds_plan(&plan);
    check_ok(diffinv_dds_plan_steps(plan, &steps), "dds steps");

    expect(diffinv_dds_run_new(backend, plan, op, y.f, y.len, z.f, N + 1, f32, BATCH, &run),
           DIFFINV_STATUS_LENGTH_MISMATCH, "long z");
    y.f[0] = INFINITY;
    expect(diffinv_dds_run_new(backend, plan, op, y.f, y.len, z.f, N, f32, BATCH, &run),
           DIFFINV_STATUS_INVALID_ARGUMENT, "infinity in y");
    y.f[0] = measured(0);
    check_ok(diffinv_dds_run_new(backend, plan, op, y.f, y.len, z.f, N, f32, BATCH, &run), "dds run");
    expect(diffinv_dds_run_tweedie(run, NULL, N), DIFFINV_STATUS_NULL_POINTER, "null eps");
    check_ok(diffinv_dds_run_needs_noise(run, &needs), "needs noise");
    if (!needs) {
        fprintf(stderr, "the first DDS step draws noise at eta 0.85\n");
        failures++;
    }
    expect(diffinv_dds_run_renoise(run, x.f, N, NULL, 0), DIFFINV_STATUS_INVALID_ARGUMENT,
           "renoise without the noise it needs");
    expect(diffinv_normal_noise(backend, 0, 0, z.f, N, 9), DIFFINV_STATUS_INVALID_ARGUMENT, "noise of dtype 9");
    for (size_t k = 0; k < steps; k++) {
        check_ok(diffinv_normal_noise(backend, 1, (uint32_t)k, z.f, N, f32), "noise");
        check_ok(diffinv_dds_run_renoise(run, x.f, N, z.f, N), "renoise");
    }
    expect(diffinv_dds_run_tweedie(run, x.f, N), DIFFINV_STATUS_INVALID_ARGUMENT, "tweedie past the end");
    expect(diffinv_dds_run_consistency(run), DIFFINV_STATUS_INVALID_ARGUMENT, "consistency past the end");
    expect(diffinv_dds_run_renoise(run, x.f, N, z.f, N), DIFFINV_STATUS_INVALID_ARGUMENT, "renoise past the end");
    expect(diffinv_dds_run_point(run, &point), DIFFINV_STATUS_INVALID_ARGUMENT, "dds point past the end");
    check_ok(diffinv_dds_run_needs_noise(run, &needs), "needs noise at the end");
    if (needs) {
        fprintf(stderr, "a finished DDS run needs no noise\n");
        failures++;
    }
    diffinv_dds_run_free(run);
    diffinv_dds_run_free(NULL);
    diffinv_dds_plan_free(plan);
    diffinv_dds_plan_free(NULL);
    diffinv_operator_free(op);
}

int main(void) {
    DiffinvBackend *backend = NULL;
    check_ok(diffinv_backend_cpu_new(&backend), "backend");
    for (int op = 0; op < 2; op++) {
        for (int jacobian = 0; jacobian < 2; jacobian++) {
            guided(backend, op, jacobian, DIFFINV_DTYPE_F32);
            guided(backend, op, jacobian, DIFFINV_DTYPE_F16);
        }
        dds(backend, op, DIFFINV_DTYPE_F32);
        dds(backend, op, DIFFINV_DTYPE_F16);
    }
    bad_operators(backend);
    bad_guided(backend);
    bad_dds(backend);
    diffinv_backend_free(backend);
    return failures == 0 ? 0 : 1;
}
