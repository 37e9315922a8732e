#include <signal.h>
#include <stdlib.h>

#if defined(MODE_slow)
#define SLOW_REPEATS 50
#else
#define SLOW_REPEATS 1
#endif

#if defined(MODE_compile_error)
#error "this configuration does not compile"
#endif

void faulty(int n, const float *restrict x, float *restrict y) {
#if defined(MODE_crash)
    volatile int *null = 0;
    *null = 1;
#elif defined(MODE_abort)
    abort();
#elif defined(MODE_hang)
    for (volatile int spin = 0;; spin++) {}
#elif defined(MODE_oob)
    for (int i = 0; i <= n + 3; i++) y[i] = x[i < n ? i : 0] + 1.0f;
#elif defined(MODE_clobber)
    for (int i = 0; i < n; i++) y[i] = x[i] + 1.0f;
    ((float *)x)[0] = 42.0f;
#elif defined(MODE_wrong)
    for (int i = 0; i < n; i++) y[i] = x[i] + 1.5f;
#else
    for (int r = 0; r < SLOW_REPEATS; r++) {
        for (int i = 0; i < n; i++) y[i] = x[i] + 1.0f;
        __asm__ volatile("" ::: "memory");
    }
#endif
}
