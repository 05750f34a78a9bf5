/* unixpp: round trip of an 8-byte message between two processes over a unix stream socket
 * pair, without PVM: the floor under any daemon-route round trip on this machine (which is
 * four such one-way hops, i.e. two of these round trips, plus the daemon's and the library's
 * own work). usage: unixpp [iters]; prints "unix_rtt_us min median max". */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>

static double now_us(void)
{
	struct timeval t;
	gettimeofday(&t, 0);
	return t.tv_sec * 1e6 + t.tv_usec;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int full(int fd, char *b, int n, int rd)
{
	int got = 0;
	while (got < n) {
		int k = rd ? read(fd, b + got, n - got) : write(fd, b + got, n - got);
		if (k <= 0) return -1;
		got += k;
	}
	return 0;
}

int main(int argc, char **argv)
{
	int n = argc > 1 ? atoi(argv[1]) : 10000, sv[2], i;
	char buf[8] = "pingpong";
	if (n < 1) n = 1;
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) { perror("socketpair"); return 1; }
	pid_t pid = fork();
	if (pid == 0) {
		close(sv[0]);
		while (full(sv[1], buf, 8, 1) == 0 && full(sv[1], buf, 8, 0) == 0)
			;
		_exit(0);
	}
	close(sv[1]);
	double *rt = malloc(sizeof(double) * n);
	for (i = -100; i < n; i++) {
		double t0 = now_us();
		if (full(sv[0], buf, 8, 0) || full(sv[0], buf, 8, 1)) { fprintf(stderr, "io error\n"); return 1; }
		if (i >= 0) rt[i] = now_us() - t0;
	}
	close(sv[0]);
	waitpid(pid, 0, 0);
	qsort(rt, n, sizeof(double), cmp_double);
	printf("unix_rtt_us %.1f %.1f %.1f\n", rt[0], rt[n / 2], rt[n - 1]);
	return 0;
}
