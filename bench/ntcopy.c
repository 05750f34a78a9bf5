/* ntcopy: a 16 MB copy with glibc memcpy against a loop of SSE2 non-temporal (streamed) stores,
 * on one thread and split over two, and the receiver's two copies of a large unpack (sender's
 * arena -> receive buffer -> program's array) against one read streamed into both at once. Cold
 * buffers (a ring of 6). The question behind it (docs/bench-daemon.md, "Large copies on two
 * threads"): does glibc stream at these sizes here? It does not (its threshold scales with the
 * last-level cache); libpvm3-shim pcopy.rs streams.
 * Build: cc -O2 -pthread -o ntcopy bench/ntcopy.c; run: ntcopy. */
#include <emmintrin.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "timing.h"

#define RING 6
#define ITERS 20

/* Streams n bytes from s into each of nd destinations (all 16-byte aligned). */
static void stream(char **d, int nd, const char *s, size_t n)
{
	size_t i = 0;
	for (; i + 64 <= n; i += 64) {
		__m128i v[4];
		for (int k = 0; k < 4; k++) v[k] = _mm_loadu_si128((const __m128i *)(s + i) + k);
		for (int j = 0; j < nd; j++)
			for (int k = 0; k < 4; k++) _mm_stream_si128((__m128i *)(d[j] + i) + k, v[k]);
	}
	for (int j = 0; j < nd; j++) memcpy(d[j] + i, s + i, n - i);
	_mm_sfence();
}

enum { MEMCPY, STREAM, MEMCPY_TWICE, STREAM_DUAL, MODES };
static const char *names[MODES] = { "memcpy", "streamed", "memcpy src->v->dst", "streamed into v and dst" };

struct job { int mode; char *s, *d, *d2; size_t n; };

static void run(struct job *j)
{
	char *both[2] = { j->d, j->d2 };
	switch (j->mode) {
	case MEMCPY: memcpy(j->d, j->s, j->n); break;
	case STREAM: stream(both, 1, j->s, j->n); break;
	case MEMCPY_TWICE: memcpy(j->d, j->s, j->n); memcpy(j->d2, j->d, j->n); break;
	default: stream(both, 2, j->s, j->n); break;
	}
}

static void *helper(void *a)
{
	run(a);
	return 0;
}

int main(void)
{
	size_t n = 16 << 20;
	char *s[RING], *d[RING], *d2[RING];
	for (int i = 0; i < RING; i++) {
		s[i] = aligned_alloc(64, n);
		d[i] = aligned_alloc(64, n);
		d2[i] = aligned_alloc(64, n);
		memset(s[i], i, n);
		memset(d[i], 1, n);
		memset(d2[i], 2, n);
	}
	for (int mode = 0; mode < MODES; mode++)
		for (int threads = 1; threads <= 2; threads++) {
			double t[ITERS];
			for (int k = 0; k < ITERS; k++) {
				int r = k % RING;
				size_t half = n / threads;
				struct job a = { mode, s[r], d[r], d2[r], half };
				struct job b = { mode, s[r] + half, d[r] + half, d2[r] + half, n - half };
				pthread_t p;
				double t0 = now_us();
				if (threads == 2) pthread_create(&p, 0, helper, &b);
				run(&a);
				if (threads == 2) pthread_join(p, 0);
				t[k] = now_us() - t0;
			}
			qsort(t, ITERS, sizeof t[0], cmp_double);
			printf("%-26s %d thread%s: min %.0f median %.0f us\n", names[mode], threads,
			       threads > 1 ? "s" : "", t[0], t[ITERS / 2]);
		}
	return 0;
}
