/* A stream of numbered, checksummed messages of mixed sizes between two tasks on different
 * hosts, for the lossy-link test (hard_lossy_links.rs). Two roles:
 *   lossy_stream rx TIMEOUT CREDIT
 *       prints "tid <hex>", then receives DATA messages from one sender and checks that each
 *       arrives exactly once, in order, with its length and checksum intact; prints "at N"
 *       every 1000 messages; every CREDIT messages (0: never) tells the sender how many
 *       arrived; on END answers with the count and then waits one more second for anything
 *       arriving late (a duplicate delivered after the end is a failure too).
 *   lossy_stream tx RXTID COUNT SEED MAXLEN TIMEOUT WINDOW
 *       sends COUNT messages: 60% of 1..256 bytes, 30% of 256..4095 (one or two fragments
 *       between daemons), 10% of 4096..MAXLEN (multi-fragment), then END, and waits for the
 *       receiver's count. With WINDOW > 0 it never has more than WINDOW messages sent and
 *       not yet reported by the receiver (credits); with 0 it sends as fast as its daemon
 *       takes them.
 * No task in this test is ever killed.
 * The last line printed is the verdict the test reads:
 *   rx ok N bytes B big K | tx done N bytes B big K | ... BAD ... | ... timeout ... */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <pvm3.h>

#define TAG_DATA 11
#define TAG_END 12
#define TAG_ACK 13
#define TAG_CREDIT 14
#define BIG 4096

#include "msgcheck.h"

static int rx(int timeout, int credit)
{
	int me = pvm_mytid(), expected = 1, sender = 0, bufid, len, tag, src, seq, n, total, maxlen = 0;
	long long bytes = 0;
	int big = 0;
	unsigned ck;
	unsigned char *buf = 0;
	struct timeval tmout = {timeout, 0}, late = {1, 0};
	printf("tid %x\n", me);
	fflush(stdout);
	if (me < 0)
		return 1;
	for (;;) {
		bufid = pvm_trecv(-1, -1, &tmout);
		if (bufid <= 0) {
			printf("rx timeout after %d\n", expected - 1);
			return 3;
		}
		pvm_bufinfo(bufid, &len, &tag, &src);
		if (sender && src != sender) {
			printf("rx BAD source %x (sender %x)\n", src, sender);
			return 2;
		}
		sender = src;
		if (tag == TAG_DATA) {
			pvm_upkint(&seq, 1, 1);
			pvm_upkint(&n, 1, 1);
			if (n < 0 || n > (1 << 20)) {
				printf("rx BAD length %d at %d\n", n, seq);
				return 2;
			}
			if (n > maxlen) {
				buf = realloc(buf, n);
				maxlen = n;
			}
			pvm_upkbyte((char *)buf, n, 1);
			pvm_upkuint(&ck, 1, 1);
			if (seq != expected) {
				printf("rx BAD order seq %d expected %d (%s)\n", seq, expected,
				       seq < expected ? "duplicate or old" : "gap");
				return 2;
			}
			if (cksum(buf, n) != ck) {
				printf("rx BAD checksum at %d (%d bytes)\n", seq, n);
				return 2;
			}
			bytes += n;
			big += n >= BIG;
			if (credit > 0 && expected % credit == 0) {
				pvm_initsend(PvmDataDefault);
				pvm_pkint(&expected, 1, 1);
				pvm_send(src, TAG_CREDIT);
			}
			if (expected % 1000 == 0) {
				printf("at %d\n", expected);
				fflush(stdout);
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
			bufid = pvm_trecv(-1, -1, &late);
			if (bufid > 0) {
				pvm_bufinfo(bufid, &len, &tag, &src);
				printf("rx BAD extra message after the end: tag %d from %x\n", tag, src);
				return 2;
			}
			printf("rx ok %d bytes %lld big %d\n", n, bytes, big);
			return 0;
		} else {
			printf("rx BAD tag %d\n", tag);
			return 2;
		}
	}
}

static int tx(int rxtid, int count, unsigned seed, int maxlen, int timeout, int window)
{
	unsigned char *buf = malloc(maxlen > BIG ? maxlen : BIG);
	int i, len, n, bufid, tag, src, blen, r, big = 0, acked = 0;
	long long bytes = 0;
	unsigned ck, x = seed;
	struct timeval tmout = {timeout, 0};
	if (pvm_mytid() < 0 || !buf)
		return 1;
	for (i = 1; i <= count; i++) {
		while (window > 0 && i - 1 - acked >= window) {
			bufid = pvm_trecv(rxtid, TAG_CREDIT, &tmout);
			if (bufid <= 0) {
				printf("tx timeout waiting for credit at %d (%d reported)\n", i, acked);
				return 3;
			}
			pvm_upkint(&n, 1, 1);
			if (n > acked)
				acked = n;
		}
		x = x * 1103515245u + 12345u;
		r = (int)((x >> 8) % 100);
		x = x * 1103515245u + 12345u;
		if (r < 60 || maxlen <= 256)
			len = 1 + (int)((x >> 8) % 256);
		else if (r < 90 || maxlen <= BIG)
			len = 256 + (int)((x >> 8) % (BIG - 256));
		else
			len = BIG + (int)((x >> 8) % (unsigned)(maxlen - BIG + 1));
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
		bytes += len;
		big += len >= BIG;
	}
	pvm_initsend(PvmDataDefault);
	pvm_pkint(&count, 1, 1);
	pvm_send(rxtid, TAG_END);
	while (pvm_nrecv(rxtid, TAG_CREDIT) > 0)
		;
	bufid = pvm_trecv(rxtid, TAG_ACK, &tmout);
	if (bufid <= 0) {
		printf("tx timeout waiting for the ack\n");
		return 3;
	}
	pvm_bufinfo(bufid, &blen, &tag, &src);
	pvm_upkint(&n, 1, 1);
	if (n != count) {
		printf("tx BAD ack %d of %d\n", n, count);
		return 2;
	}
	printf("tx done %d bytes %lld big %d\n", n, bytes, big);
	return 0;
}

int main(int argc, char **argv)
{
	int cc;
	pvm_setopt(PvmAutoErr, 0);
	if (argc >= 4 && !strcmp(argv[1], "rx"))
		cc = rx(atoi(argv[2]), atoi(argv[3]));
	else if (argc >= 8 && !strcmp(argv[1], "tx"))
		cc = tx((int)strtol(argv[2], 0, 16), atoi(argv[3]), (unsigned)atoi(argv[4]), atoi(argv[5]),
			atoi(argv[6]), atoi(argv[7]));
	else {
		fprintf(stderr, "usage: lossy_stream rx TIMEOUT CREDIT | lossy_stream tx RXTID COUNT SEED MAXLEN TIMEOUT WINDOW\n");
		return 1;
	}
	fflush(stdout);
	pvm_exit();
	return cc;
}
