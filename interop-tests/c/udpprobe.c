/* Hostile datagrams for hard_udp.rs: udpprobe IP PORT SRCTID DSTTID ROUNDS
 * Each round: random bytes (1..1500), a 5-byte datagram, a forged DM_HALT (seq 1+i), a FIN|ACK,
 * a FIN|DAT far out of the window (seq 30000+i), random seq/ack with an unknown DM code; then
 * one 65000-byte datagram. Prints how many datagrams were sent. Fixed seed: same bytes each run. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <netinet/in.h>

static int s;
static struct sockaddr_in to;
static int sent;

static void tx(const unsigned char *b, size_t n)
{
	if (sendto(s, b, n, 0, (struct sockaddr *)&to, sizeof to) >= 0)
		sent++;
}

static size_t dd(unsigned char *b, unsigned dst, unsigned src, unsigned seq, unsigned ack, unsigned flags)
{
	unsigned v;
	memset(b, 0, 16);
	v = htonl(dst); memcpy(b, &v, 4);
	v = htonl(src); memcpy(b + 4, &v, 4);
	b[8] = seq >> 8; b[9] = seq; b[10] = ack >> 8; b[11] = ack; b[12] = flags;
	return 16;
}

static size_t mh(unsigned char *b, unsigned code)
{
	unsigned w[8] = {htonl(0x10000000), htonl(code), htonl(0x7ffff), 0, 0, 0, 0, 0};
	memcpy(b, w, 32);
	return 32;
}

int main(int argc, char **argv)
{
	static unsigned char b[65000];
	unsigned src, dst;
	int i, j, n, rounds;
	if (argc != 6) {
		fprintf(stderr, "usage: udpprobe IP PORT SRCTID DSTTID ROUNDS\n");
		return 1;
	}
	s = socket(AF_INET, SOCK_DGRAM, 0);
	memset(&to, 0, sizeof to);
	to.sin_family = AF_INET;
	to.sin_port = htons(atoi(argv[2]));
	inet_pton(AF_INET, argv[1], &to.sin_addr);
	src = strtoul(argv[3], 0, 16);
	dst = strtoul(argv[4], 0, 16);
	rounds = atoi(argv[5]);
	srand(99);
	for (i = 0; i < rounds; i++) {
		n = 1 + rand() % 1500;
		for (j = 0; j < n; j++)
			b[j] = rand();
		tx(b, n);
		tx((const unsigned char *)"\x80\x04\x00\x00\x00", 5);
		n = dd(b, dst, src, 1 + i, 0, 0x04 | 0x03);
		n += mh(b + n, 0x8002000a); /* DM_HALT */
		tx(b, n);
		tx(b, dd(b, dst, src, 0, i, 0x08 | 0x10));            /* FIN|ACK */
		tx(b, dd(b, dst, src, 30000 + i, 0, 0x08 | 0x04));    /* FIN|DAT out of window */
		n = dd(b, dst, src, rand() & 0xffff, rand() & 0xffff, 0x04 | 0x03);
		n += mh(b + n, 0x8002ffff);
		tx(b, n);
	}
	memset(b, 0xab, sizeof b);
	tx(b, sizeof b);
	printf("%d\n", sent);
	return 0;
}
