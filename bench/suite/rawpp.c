/* rawpp: the physical limit for ci/bench, the same ping-pong as bpp (4-byte length + payload, echoed
 * back) over a plain socket between two processes, no PVM at all.
 *   rawpp unix [-n iters] size...            socketpair, the echo side is a forked child
 *   rawpp tcp [-n iters] size...             TCP over 127.0.0.1, forked child
 *   rawpp serve PORT                          TCP echo server for one connection (run on host B)
 *   rawpp connect IP PORT [-n iters] size...  client to a rawpp serve (host A)
 * Prints "raw SIZE KIND ITERS MIN_US MED_US MAX_US" per size. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include "../timing.h"

#define MAXBUF (17 << 20)

static int full(int fd, char *p, size_t n, int wr)
{
	while (n > 0) {
		ssize_t r = wr ? write(fd, p, n) : read(fd, p, n);
		if (r <= 0) return -1;
		p += r;
		n -= (size_t)r;
	}
	return 0;
}

/* Length and payload go out in one write, as a PVM fragment does (header and data in one
 * writev): a small round trip is then one wake-up per direction, the floor bpp is held to. */
static void echo(int fd)
{
	char *pkt = malloc(MAXBUF + 4);
	unsigned int n;
	while (full(fd, pkt, 4, 0) == 0 && (memcpy(&n, pkt, 4), n <= MAXBUF)) {
		if (full(fd, pkt + 4, n, 0) || full(fd, pkt, 4 + n, 1)) break;
	}
	close(fd);
}

static void nodelay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int listener(int port, int *bound)
{
	int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	struct sockaddr_in a = {0};
	socklen_t al = sizeof a;
	setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	if (bind(l, (struct sockaddr *)&a, sizeof a) || listen(l, 1)) { perror("rawpp: bind"); exit(1); }
	getsockname(l, (struct sockaddr *)&a, &al);
	*bound = ntohs(a.sin_port);
	return l;
}

static int dial(const char *ip, int port)
{
	struct sockaddr_in a = {0};
	a.sin_family = AF_INET;
	a.sin_port = htons(port);
	inet_pton(AF_INET, ip, &a.sin_addr);
	for (int tries = 0; tries < 100; tries++) {
		int s = socket(AF_INET, SOCK_STREAM, 0);
		if (connect(s, (struct sockaddr *)&a, sizeof a) == 0) { nodelay(s); return s; }
		close(s);
		usleep(50000);
	}
	perror("rawpp: connect");
	exit(1);
}

int main(int argc, char **argv)
{
	if (argc < 2) { fprintf(stderr, "usage: see the comment in rawpp.c\n"); return 2; }
	const char *kind = argv[1];
	int fd = -1, i = 2, iters = 200;
	pid_t child = 0;
	if (!strcmp(kind, "serve")) {
		int port;
		int l = listener(argc > 2 ? atoi(argv[2]) : 0, &port);
		int c = accept(l, 0, 0);
		nodelay(c);
		echo(c);
		return 0;
	} else if (!strcmp(kind, "unix")) {
		int sv[2];
		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) { perror("socketpair"); return 1; }
		if ((child = fork()) == 0) { close(sv[0]); echo(sv[1]); _exit(0); }
		close(sv[1]);
		fd = sv[0];
	} else if (!strcmp(kind, "tcp")) {
		int port, l = listener(0, &port);
		if ((child = fork()) == 0) { int c = accept(l, 0, 0); nodelay(c); echo(c); _exit(0); }
		close(l);
		fd = dial("127.0.0.1", port);
	} else if (!strcmp(kind, "connect") && argc > 3) {
		fd = dial(argv[2], atoi(argv[3]));
		kind = "veth";
		i = 4;
	} else {
		fprintf(stderr, "rawpp: unknown mode %s\n", kind);
		return 2;
	}
	if (i + 1 < argc && !strcmp(argv[i], "-n")) { iters = atoi(argv[i + 1]); i += 2; }
	if (iters < 1) iters = 1;
	char *pkt = malloc(MAXBUF + 4), *buf = pkt + 4;
	memset(pkt, 0x5a, MAXBUF + 4);
	double *rt = malloc(sizeof(double) * (iters + 10));
	for (; i < argc; i++) {
		unsigned int n = (unsigned int)atoi(argv[i]), m;
		int it = iters;
		long long budget = 64LL << 20;
		if (n == 0 || n > (16u << 20)) continue;
		if (budget / n < it) it = budget / n;
		if (it < 3) it = 3;
		for (int w = -2; w < it; w++) {
			double t0 = now_us();
			memcpy(pkt, &n, 4);
			if (full(fd, pkt, 4 + n, 1) || full(fd, (char *)&m, 4, 0) ||
			    m != n || full(fd, buf, m, 0)) {
				fprintf(stderr, "rawpp: connection broken\n");
				return 1;
			}
			if (w >= 0) rt[w] = now_us() - t0;
		}
		qsort(rt, it, sizeof(double), cmp_double);
		printf("raw %u %s %d %.1f %.1f %.1f\n", n, kind, it, rt[0], rt[it / 2], rt[it - 1]);
		fflush(stdout);
	}
	close(fd);
	if (child > 0) waitpid(child, 0, 0);
	return 0;
}
