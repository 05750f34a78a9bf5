/* Bulk transfer between two hosts, for the sliding-window measurement.
 *   multi_bulk HOST N SIZE   spawns a child on HOST, sends it N messages of SIZE bytes, waits
 *                            for its acknowledgement and prints "bulk N SIZE <seconds> <check>"
 *   multi_bulk -c            the child: receives N messages, sums their first bytes, replies */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <pvm3.h>

static double now(void)
{
	struct timeval tv;
	gettimeofday(&tv, 0);
	return tv.tv_sec + tv.tv_usec / 1e6;
}

int main(int argc, char **argv)
{
	int me, child, n, size, i, sum = 0, v;
	char *buf;
	double t0;

	pvm_setopt(PvmAutoErr, 0);
	me = pvm_mytid();
	if (argc > 1 && strcmp(argv[1], "-c") == 0) {
		int p = pvm_parent();
		pvm_recv(p, 1);
		pvm_upkint(&n, 1, 1);
		pvm_upkint(&size, 1, 1);
		buf = malloc(size);
		for (i = 0; i < n; i++) {
			pvm_recv(p, 2);
			pvm_upkbyte(buf, size, 1);
			sum += (unsigned char)buf[0] + (unsigned char)buf[size - 1];
		}
		pvm_initsend(PvmDataDefault);
		pvm_pkint(&sum, 1, 1);
		pvm_send(p, 3);
		pvm_exit();
		return 0;
	}
	if (argc < 4 || me < 0)
		return 2;
	n = atoi(argv[2]);
	size = atoi(argv[3]);
	buf = malloc(size);
	if (pvm_spawn(argv[0], (char *[]){"-c", 0}, PvmTaskHost, argv[1], 1, &child) != 1)
		return 1;
	pvm_initsend(PvmDataDefault);
	pvm_pkint(&n, 1, 1);
	pvm_pkint(&size, 1, 1);
	pvm_send(child, 1);
	t0 = now();
	for (i = 0; i < n; i++) {
		memset(buf, i & 0x7f, size);
		pvm_initsend(PvmDataRaw);
		pvm_pkbyte(buf, size, 1);
		pvm_send(child, 2);
	}
	pvm_recv(child, 3);
	pvm_upkint(&v, 1, 1);
	for (i = 0; i < n; i++)
		sum += 2 * (i & 0x7f);
	printf("bulk %d %d %.3f %s\n", n, size, now() - t0, v == sum ? "ok" : "BAD");
	pvm_exit();
	return 0;
}
