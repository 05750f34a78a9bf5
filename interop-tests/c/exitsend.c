/* Tasks that exit without pvm_exit right after sending.
 *   exitsend N SIZE [hold|-] [HOST]
 *                            the parent: spawns itself as a child (on HOST if given), asks to
 *                            be told when it exits, and counts the child's messages until that
 *                            notice; prints
 *                            "got K of N, in order B, exit notice M ms after the last"
 *   (child) N SIZE [hold]    sends N messages of SIZE bytes (a sequence number first) to its
 *                            parent and returns from main without pvm_exit; with "hold" it
 *                            first starts a background process that keeps its descriptors,
 *                            the daemon socket among them, open for 5 s */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/time.h>
#include <pvm3.h>

static double now_ms(void)
{
	struct timeval tv;
	gettimeofday(&tv, 0);
	return tv.tv_sec * 1e3 + tv.tv_usec / 1e3;
}

int main(int argc, char **argv)
{
	int parent, n, size, i, child, got = 0, in_order = 1, bid, tag, len, src, v;
	char *buf;
	double last = now_ms();

	if (argc < 3) {
		fprintf(stderr, "usage: exitsend N SIZE [hold|-] [HOST]\n");
		return 2;
	}
	n = atoi(argv[1]);
	size = atoi(argv[2]);
	pvm_setopt(PvmAutoErr, 0);
	pvm_mytid();
	parent = pvm_parent();
	if (parent > 0) {
		if (argc > 3 && !strcmp(argv[3], "hold") && fork() == 0) {
			sleep(5);
			_exit(0);
		}
		buf = malloc(size > 0 ? size : 1);
		memset(buf, 'x', size);
		for (i = 0; i < n; i++) {
			pvm_initsend(PvmDataRaw);
			pvm_pkint(&i, 1, 1);
			pvm_pkbyte(buf, size, 1);
			pvm_send(parent, 7);
		}
		return 0; /* no pvm_exit */
	}
	if (pvm_spawn(argv[0], argv + 1, argc > 4 ? PvmTaskHost : PvmTaskDefault, argc > 4 ? argv[4] : "",
		      1, &child) != 1) {
		printf("spawn failed %d\n", child);
		return 1;
	}
	pvm_notify(PvmTaskExit, 99, 1, &child);
	for (;;) {
		struct timeval tmo = {20, 0};
		bid = pvm_trecv(-1, -1, &tmo);
		if (bid <= 0) {
			printf("got %d of %d, no exit notice in 20 s\n", got, n);
			break;
		}
		pvm_bufinfo(bid, &len, &tag, &src);
		if (tag == 99) {
			/* The notice follows everything the child sent. */
			printf("got %d of %d, in order %d, exit notice %.0f ms after the last\n", got, n,
			       in_order, now_ms() - last);
			break;
		}
		pvm_upkint(&v, 1, 1);
		in_order &= v == got;
		got++;
		last = now_ms();
	}
	pvm_exit();
	return 0;
}
