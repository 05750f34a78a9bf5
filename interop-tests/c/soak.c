/* Soak test task (hard_soak.rs). Two roles:
 *   soak rx TIMEOUT          prints "tid <hex>", then receives numbered, checksummed messages from
 *                            one sender and checks each arrives exactly once and in order;
 *   soak tx RXTID COUNT SEED sends COUNT messages, then END, and waits for the receiver's ack.
 * Each side watches the other with pvm_notify(PvmTaskExit): a peer that dies must be notified.
 * Last line printed is the verdict the checker reads:
 *   rx ok N | rx sender-gone N | tx done N | tx rx-gone N | ... BAD ... | ... timeout ... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pvm3.h>

#define TAG_DATA 1
#define TAG_END 2
#define TAG_ACK 3
#define TAG_EXIT 99
#define MAXLEN 6000

#include "msgcheck.h"

static int rx(int timeout)
{
	static unsigned char buf[MAXLEN];
	int me = pvm_mytid(), expected = 1, sender = 0, bufid, len, tag, src, seq, n, total, who;
	unsigned ck;
	struct timeval tmout = {timeout, 0};
	printf("tid %x\n", me);
	fflush(stdout);
	if (me < 0)
		return 1;
	for (;;) {
		bufid = pvm_trecv(-1, -1, &tmout);
		if (bufid <= 0) {
			printf("rx timeout %d\n", expected - 1);
			return 3;
		}
		pvm_bufinfo(bufid, &len, &tag, &src);
		if (tag == TAG_DATA) {
			if (!sender) {
				sender = src;
				pvm_notify(PvmTaskExit, TAG_EXIT, 1, &sender);
				/* Tells the harness whom this receiver watches from now on. */
				printf("from %x\n", src);
				fflush(stdout);
			}
			if (src != sender) {
				printf("rx BAD source %x (sender %x)\n", src, sender);
				return 2;
			}
			pvm_upkint(&seq, 1, 1);
			pvm_upkint(&n, 1, 1);
			if (n < 0 || n > MAXLEN) {
				printf("rx BAD length %d at %d\n", n, seq);
				return 2;
			}
			pvm_upkbyte((char *)buf, n, 1);
			pvm_upkuint(&ck, 1, 1);
			if (seq != expected) {
				printf("rx BAD order seq %d expected %d\n", seq, expected);
				return 2;
			}
			if (cksum(buf, n) != ck) {
				printf("rx BAD checksum at %d\n", seq);
				return 2;
			}
			expected++;
		} else if (tag == TAG_END) {
			pvm_upkint(&total, 1, 1);
			pvm_initsend(PvmDataDefault);
			n = expected - 1;
			pvm_pkint(&n, 1, 1);
			pvm_send(src, TAG_ACK);
			if (total != n) {
				printf("rx BAD count %d of %d\n", n, total);
				return 2;
			}
			printf("rx ok %d\n", n);
			return 0;
		} else if (tag == TAG_EXIT) {
			pvm_upkint(&who, 1, 1);
			printf("rx sender-gone %d\n", expected - 1);
			return 0;
		}
	}
}

static int tx(int rxtid, int count, unsigned seed)
{
	static unsigned char buf[MAXLEN];
	int i, len, n, bufid, tag, src, blen;
	unsigned ck, x = seed;
	struct timeval tmout = {60, 0};
	if (pvm_mytid() < 0)
		return 1;
	pvm_notify(PvmTaskExit, TAG_EXIT, 1, &rxtid);
	for (i = 1; i <= count; i++) {
		x = x * 1103515245u + 12345u;
		len = 1 + (int)((x >> 8) % MAXLEN);
		ck = fill(buf, len, seed, i);
		pvm_initsend(PvmDataDefault);
		pvm_pkint(&i, 1, 1);
		pvm_pkint(&len, 1, 1);
		pvm_pkbyte((char *)buf, len, 1);
		pvm_pkuint(&ck, 1, 1);
		if (pvm_send(rxtid, TAG_DATA) < 0) {
			printf("tx send failed at %d\n", i);
			return 4;
		}
		if (pvm_nrecv(-1, TAG_EXIT) > 0) {
			printf("tx rx-gone %d\n", i);
			return 0;
		}
		if (i % 64 == 0)
			usleep(2000);
	}
	pvm_initsend(PvmDataDefault);
	pvm_pkint(&count, 1, 1);
	pvm_send(rxtid, TAG_END);
	bufid = pvm_trecv(-1, -1, &tmout);
	if (bufid <= 0) {
		printf("tx timeout waiting for the ack\n");
		return 3;
	}
	pvm_bufinfo(bufid, &blen, &tag, &src);
	if (tag == TAG_EXIT) {
		printf("tx rx-gone %d\n", count);
		return 0;
	}
	pvm_upkint(&n, 1, 1);
	if (n != count) {
		printf("tx BAD ack %d of %d\n", n, count);
		return 2;
	}
	printf("tx done %d\n", n);
	return 0;
}

int main(int argc, char **argv)
{
	int cc;
	pvm_setopt(PvmAutoErr, 0);
	if (argc >= 3 && !strcmp(argv[1], "rx"))
		cc = rx(atoi(argv[2]));
	else if (argc >= 5 && !strcmp(argv[1], "tx"))
		cc = tx((int)strtol(argv[2], 0, 16), atoi(argv[3]), (unsigned)atoi(argv[4]));
	else {
		fprintf(stderr, "usage: soak rx TIMEOUT | soak tx RXTID COUNT SEED\n");
		return 1;
	}
	fflush(stdout);
	pvm_exit();
	return cc;
}
