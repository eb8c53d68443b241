/* What the C test programs share: a call that must succeed (else exit 2), and
 * a call that must fail with a given status and a message (else counted in
 * `failures`, which main turns into the exit status). */
#ifndef DIFFINV_TEST_CHECK_H
#define DIFFINV_TEST_CHECK_H

#include "diffinv.h"

#include <stdio.h>
#include <stdlib.h>

static int failures = 0;

static void check_ok(DiffinvStatus s, const char *what) {
    if (s != DIFFINV_STATUS_OK) {
        fprintf(stderr, "%s failed: status %d: %s\n", what, (int)s, diffinv_last_error());
        exit(2);
    }
}

/* A call that must fail with `want` and leave a message; printed as a "bad"
 * line, which tests/c_program.rs counts. */
static void expect(DiffinvStatus got, DiffinvStatus want, const char *what) {
    const char *msg = diffinv_last_error();
    if (got != want || msg == NULL || msg[0] == '\0') {
        fprintf(stderr, "bad call %s: status %d (want %d), message \"%s\"\n", what, (int)got,
                (int)want, msg ? msg : "(null)");
        failures++;
    } else {
        printf("bad %s: %d %s\n", what, (int)got, msg);
    }
}

#endif
