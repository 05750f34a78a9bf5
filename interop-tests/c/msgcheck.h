/* Numbered, checksummed test messages shared by soak.c and lossy_stream.c: the bytes of
 * message SEQ of a stream with SEED are a fixed pseudo-random sequence, so the receiver can
 * check every byte through the FNV-1a checksum the sender packs with it. */
#ifndef MSGCHECK_H
#define MSGCHECK_H

/* Fills b[0..len) for message seq and returns its checksum. */
static unsigned fill(unsigned char *b, int len, unsigned seed, int seq)
{
	unsigned x = seed * 2654435761u + (unsigned)seq * 40503u + 1, h = 2166136261u;
	int i;
	for (i = 0; i < len; i++) {
		x = x * 1103515245u + 12345u;
		b[i] = (unsigned char)(x >> 16);
		h = (h ^ b[i]) * 16777619u;
	}
	return h;
}

/* The checksum of received bytes. */
static unsigned cksum(const unsigned char *b, int len)
{
	unsigned h = 2166136261u;
	int i;
	for (i = 0; i < len; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

#endif
