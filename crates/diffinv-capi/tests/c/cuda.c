/* The CUDA entries of the C ABI from C, told by tests/c_program.rs what this
 * machine has:
 *   cuda no-driver REASON   opening a device or a raw context returns
 *                           DIFFINV_STATUS_UNAVAILABLE with REASON in the
 *                           message and leaves the output handle alone;
 *   cuda no-device REASON   the same for opening a device (a raw context is
 *                           not tried: with a driver it would be used);
 *   cuda device             the device backend opens, a run starts on it, and
 *                           device steps with bad arguments are refused.
 * Null arguments are refused in every case; nothing aborts. Exit status 0 iff
 * every call behaved as stated. */
#include "diffinv.h"

#include <stdio.h>
#include <string.h>

static int failures = 0;

/* A call that must return `want`; with a non-null `needle`, its message must
 * contain it. */
static void expect(DiffinvStatus got, DiffinvStatus want, const char *needle, const char *what) {
    const char *msg = diffinv_last_error();
    int message_ok = want == DIFFINV_STATUS_OK || (msg != NULL && msg[0] != '\0');
    if (needle != NULL) message_ok = message_ok && msg != NULL && strstr(msg, needle) != NULL;
    if (got != want || !message_ok) {
        fprintf(stderr, "%s: status %d (want %d), message \"%s\"\n", what, (int)got, (int)want,
                msg ? msg : "(null)");
        failures++;
    } else {
        printf("%s: %d %s\n", what, (int)got, want == DIFFINV_STATUS_OK ? "" : msg);
    }
}

static void untouched(const DiffinvBackend *backend, const char *what) {
    if (backend != NULL) {
        fprintf(stderr, "%s wrote the output handle\n", what);
        failures++;
    }
}

static void unavailable(const char *reason, int driver) {
    DiffinvBackend *backend = NULL;
    /* Any non-null value: without a driver the handle is never used. */
    int not_a_context = 0;
    expect(diffinv_backend_cuda_new(0, &backend), DIFFINV_STATUS_UNAVAILABLE, reason,
           "cuda device 0");
    untouched(backend, "cuda device 0");
    if (driver) return;
    expect(diffinv_backend_cuda_from_context(&not_a_context, NULL, &backend),
           DIFFINV_STATUS_UNAVAILABLE, reason, "cuda raw context");
    untouched(backend, "cuda raw context");
}

static void with_a_device(void) {
    DiffinvScheduleConfig sc;
    DiffinvSolverConfig so;
    DiffinvBackend *backend = NULL;
    DiffinvPlan *plan = NULL;
    DiffinvRun *run = NULL;
    static const size_t dims[4] = {1, 3, 8, 8};
    /* Host memory: the device step must refuse what is not aligned or sized,
     * before anything would dereference it on the device. */
    static float x[192 + 1];
    expect(diffinv_backend_cuda_new(0, &backend), DIFFINV_STATUS_OK, NULL, "cuda device 0");
    expect(diffinv_schedule_config_default(&sc), DIFFINV_STATUS_OK, NULL, "schedule defaults");
    expect(diffinv_solver_config_default(&so), DIFFINV_STATUS_OK, NULL, "solver defaults");
    expect(diffinv_plan_new(&sc, &so, &plan), DIFFINV_STATUS_OK, NULL, "plan");
    expect(diffinv_run_new(backend, plan, dims, 4, DIFFINV_DTYPE_F32, 0, &run), DIFFINV_STATUS_OK,
           NULL, "run on cuda");
    expect(diffinv_run_step(run, 0, NULL, 192, x, 192), DIFFINV_STATUS_NULL_POINTER, "x",
           "null device x");
    expect(diffinv_run_step(run, 0, x, 191, x + 96, 192), DIFFINV_STATUS_LENGTH_MISMATCH, "x",
           "short device x");
    expect(diffinv_run_step(run, 0, (char *)x + 2, 192, x, 192), DIFFINV_STATUS_INVALID_ARGUMENT,
           "model_out", "overlapping device buffers");
    expect(diffinv_backend_synchronize(backend), DIFFINV_STATUS_OK, NULL, "synchronize");
    diffinv_run_free(run);
    diffinv_plan_free(plan);
    diffinv_backend_free(backend);
}

int main(int argc, char **argv) {
    DiffinvBackend *backend = NULL;
    int device = argc == 2 && strcmp(argv[1], "device") == 0;
    int no_driver = argc == 3 && strcmp(argv[1], "no-driver") == 0;
    int no_device = argc == 3 && strcmp(argv[1], "no-device") == 0;
    if (!device && !no_driver && !no_device) {
        fprintf(stderr, "usage: %s device | no-driver REASON | no-device REASON\n", argv[0]);
        return 2;
    }
    expect(diffinv_backend_cuda_new(0, NULL), DIFFINV_STATUS_NULL_POINTER, "out", "null device out");
    expect(diffinv_backend_cuda_from_context(NULL, NULL, &backend), DIFFINV_STATUS_NULL_POINTER,
           "context", "null context");
    untouched(backend, "null context");
    expect(diffinv_backend_synchronize(NULL), DIFFINV_STATUS_NULL_POINTER, "backend",
           "synchronize null");
    if (device) {
        with_a_device();
    } else {
        unavailable(argv[2], no_device);
    }
    return failures == 0 ? 0 : 1;
}
