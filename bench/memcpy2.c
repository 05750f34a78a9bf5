/* memcpy2: how fast one memcpy of N bytes is on one thread, and split in two halves over two
 * threads (a helper woken per copy), with cold buffers (a ring of 8 so nothing stays cached).
 * The question behind it (docs/benchmarks.md, "After the daemon route's arena relay"): is a
 * 16 MB copy in the ping-pong bound by one core's memory bandwidth, so that a helper thread on
 * the idle core would pay?
 * Build: cc -O2 -pthread -o memcpy2 bench/memcpy2.c; run: memcpy2 16777216 30. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "timing.h"

#define RING 8

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t go = PTHREAD_COND_INITIALIZER, finished = PTHREAD_COND_INITIALIZER;
static char *job_dst, *job_src;
static size_t job_len;
static int job_ready, job_done;

/* The helper: copies whatever half it is given, then says so. */
static void *helper(void *arg)
{
	(void)arg;
	for (;;) {
		pthread_mutex_lock(&mu);
		while (!job_ready)
			pthread_cond_wait(&go, &mu);
		job_ready = 0;
		char *d = job_dst, *s = job_src;
		size_t n = job_len;
		pthread_mutex_unlock(&mu);
		memcpy(d, s, n);
		pthread_mutex_lock(&mu);
		job_done = 1;
		pthread_cond_signal(&finished);
		pthread_mutex_unlock(&mu);
	}
	return 0;
}

/* Copies n bytes, the second half on the helper. */
static void copy_split(char *d, const char *s, size_t n)
{
	pthread_mutex_lock(&mu);
	job_dst = d + n / 2;
	job_src = (char *)s + n / 2;
	job_len = n - n / 2;
	job_ready = 1;
	job_done = 0;
	pthread_cond_signal(&go);
	pthread_mutex_unlock(&mu);
	memcpy(d, s, n / 2);
	pthread_mutex_lock(&mu);
	while (!job_done)
		pthread_cond_wait(&finished, &mu);
	pthread_mutex_unlock(&mu);
}

int main(int argc, char **argv)
{
	size_t n = argc > 1 ? (size_t)atol(argv[1]) : 16 << 20;
	int k = argc > 2 ? atoi(argv[2]) : 30;
	char *buf[RING];
	for (int i = 0; i < RING; i++) {
		buf[i] = malloc(n);
		memset(buf[i], i, n);
	}
	pthread_t t;
	pthread_create(&t, 0, helper, 0);
	double *one = calloc(k, sizeof *one), *two = calloc(k, sizeof *two);
	for (int i = 0; i < k; i++) {
		double t0 = now_us();
		memcpy(buf[(4 * i) % RING], buf[(4 * i + 1) % RING], n);
		one[i] = now_us() - t0;
		t0 = now_us();
		copy_split(buf[(4 * i + 2) % RING], buf[(4 * i + 3) % RING], n);
		two[i] = now_us() - t0;
	}
	qsort(one, k, sizeof *one, cmp_double);
	qsort(two, k, sizeof *two, cmp_double);
	printf("%zu one thread %.0f/%.0f us, two threads %.0f/%.0f us (min/median)\n", n, one[0], one[k / 2],
	       two[0], two[k / 2]);
	return 0;
}
