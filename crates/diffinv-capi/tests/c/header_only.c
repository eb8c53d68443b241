/* The header on its own, compiled as C11 and as C++17 with -Wall -Werror. */
#include "diffinv.h"

int main(void) { return diffinv_last_error() == 0; }
