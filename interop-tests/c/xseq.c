/* Messages of many sizes between two hosts, both ways, checked byte by byte and in order
 * (the stream transport test, tests/xstream.rs).
 *   xseq HOST N   spawns a child on HOST, sends it N messages (sizes from a fixed list), the
 *                 child echoes each; prints "xseq N <ok|BAD> <errors> <seconds>"
 *   xseq -c       the child: checks each message's number and bytes, echoes it, and at the end
 *                 sends its error count */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <pvm3.h>

static const int sizes[] = {1, 100, 4000, 4050, 4096, 8192, 65536, 100000, 1048579, 8, 3145733, 0, 20000};
#define NSIZES ((int)(sizeof sizes / sizeof sizes[0]))
#define AHEAD 4

static double now(void)
{
	struct timeval tv;
	gettimeofday(&tv, 0);
	return tv.tv_sec + tv.tv_usec / 1e6;
}

static void fill(char *b, int i, int size)
{
	int j;
	for (j = 0; j < size; j++)
		b[j] = (char)((i * 7 + j) & 0xff);
}

/* Unpacks message number `want` from the receive buffer; 0 if it is intact. */
static int check(char *b, char *ref, int want)
{
	int seq = -1, size = -1;
	pvm_upkint(&seq, 1, 1);
	pvm_upkint(&size, 1, 1);
	if (seq != want || size != sizes[want % NSIZES])
		return 1;
	if (size > 0) {
		pvm_upkbyte(b, size, 1);
		fill(ref, want, size);
		if (memcmp(b, ref, size) != 0)
			return 1;
	}
	return 0;
}

static void pack(char *b, int i)
{
	int size = sizes[i % NSIZES];
	pvm_initsend(PvmDataRaw);
	pvm_pkint(&i, 1, 1);
	pvm_pkint(&size, 1, 1);
	if (size > 0) {
		fill(b, i, size);
		pvm_pkbyte(b, size, 1);
	}
}

int main(int argc, char **argv)
{
	int me, child, n, i, errors = 0, v = -1, max = 0;
	char *buf, *ref;
	double t0;

	for (i = 0; i < NSIZES; i++)
		if (sizes[i] > max)
			max = sizes[i];
	buf = malloc(max + 1);
	ref = malloc(max + 1);
	pvm_setopt(PvmAutoErr, 0);
	me = pvm_mytid();
	if (argc > 1 && strcmp(argv[1], "-c") == 0) {
		int p = pvm_parent();
		pvm_recv(p, 1);
		pvm_upkint(&n, 1, 1);
		for (i = 0; i < n; i++) {
			pvm_recv(p, 2);
			errors += check(buf, ref, i);
			pack(buf, i);
			pvm_send(p, 4);
		}
		pvm_initsend(PvmDataDefault);
		pvm_pkint(&errors, 1, 1);
		pvm_send(p, 3);
		pvm_exit();
		return 0;
	}
	if (argc < 3 || me < 0)
		return 2;
	n = atoi(argv[2]);
	if (pvm_spawn(argv[0], (char *[]){"-c", 0}, PvmTaskHost, argv[1], 1, &child) != 1)
		return 1;
	t0 = now();
	pvm_initsend(PvmDataDefault);
	pvm_pkint(&n, 1, 1);
	pvm_send(child, 1);
	for (i = 0; i < n; i++) {
		pack(buf, i);
		pvm_send(child, 2);
		if (i >= AHEAD) {
			pvm_recv(child, 4);
			errors += check(buf, ref, i - AHEAD);
		}
	}
	for (i = n - AHEAD < 0 ? 0 : n - AHEAD; i < n; i++) {
		pvm_recv(child, 4);
		errors += check(buf, ref, i);
	}
	pvm_recv(child, 3);
	pvm_upkint(&v, 1, 1);
	printf("xseq %d %s %d %.3f\n", n, errors == 0 && v == 0 ? "ok" : "BAD", errors + (v < 0 ? 1 : v), now() - t0);
	pvm_exit();
	return 0;
}
