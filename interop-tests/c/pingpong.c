/* Two tasks exchanging messages through their pvmd.
 *   pingpong serve        prints "tid <hex>", answers one XDR and one raw message, exits
 *   pingpong call <tid>   sends both, prints the answers */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>

#define N 20000		/* ints: about 80 KB, many fragments */

static int data[N];

int main(int argc, char **argv)
{
	int me, i, n, peer, bufid, len, tag;
	long sum;
	char s[64];

	if (argc < 2)
		return 2;
	me = pvm_mytid();
	if (me < 0) {
		printf("mytid failed %d\n", me);
		return 1;
	}
	if (!strcmp(argv[1], "serve")) {
		printf("tid %x\n", me);
		fflush(stdout);
		/* XDR message with a big array */
		bufid = pvm_recv(-1, 1);
		pvm_bufinfo(bufid, &len, &tag, &peer);
		pvm_upkint(&n, 1, 1);
		pvm_upkstr(s);
		if (n > N)
			n = N;
		pvm_upkint(data, n, 1);
		for (sum = 0, i = 0; i < n; i++)
			sum += data[i];
		pvm_initsend(PvmDataDefault);
		pvm_pkint(&n, 1, 1);
		pvm_pklong(&sum, 1, 1);
		strcat(s, "-pong");
		pvm_pkstr(s);
		pvm_send(peer, 2);
		/* raw message */
		bufid = pvm_recv(peer, 3);
		pvm_upkint(&n, 1, 1);
		pvm_upkstr(s);
		pvm_initsend(PvmDataRaw);
		n = n * 2;
		pvm_pkint(&n, 1, 1);
		pvm_pkstr(s);
		pvm_send(peer, 4);
		printf("served t%x\n", peer);
	} else {
		peer = (int)strtol(argv[2], 0, 16);
		for (i = 0; i < N; i++)
			data[i] = i;
		n = N;
		pvm_initsend(PvmDataDefault);
		pvm_pkint(&n, 1, 1);
		pvm_pkstr("ping");
		pvm_pkint(data, n, 1);
		pvm_send(peer, 1);
		bufid = pvm_recv(peer, 2);
		pvm_bufinfo(bufid, &len, &tag, &i);
		pvm_upkint(&n, 1, 1);
		pvm_upklong(&sum, 1, 1);
		pvm_upkstr(s);
		printf("reply from-server %d tag %d n %d sum %ld str %s\n", i == peer, tag, n, sum, s);
		pvm_initsend(PvmDataRaw);
		n = 21;
		pvm_pkint(&n, 1, 1);
		pvm_pkstr("raw");
		pvm_send(peer, 3);
		pvm_recv(peer, 4);
		pvm_upkint(&n, 1, 1);
		pvm_upkstr(s);
		printf("raw reply n %d str %s\n", n, s);
	}
	pvm_exit();
	return 0;
}
