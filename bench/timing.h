/* timing.h: the clock and the sort order of the C benchmark programs (bench/, bench/suite/).
 * now_us: microseconds on the monotonic clock (durations only); cmp_double: ascending, for
 * qsort of the per-iteration times before a median is taken. */
#ifndef PVM_BENCH_TIMING_H
#define PVM_BENCH_TIMING_H

#include <time.h>

static inline double now_us(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static inline int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

#endif
