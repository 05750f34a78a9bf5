/*
 * Packs messages with the legacy libpvm3 and prints their fragments, without a pvmd.
 *
 * Reads a script on stdin:
 *   case NAME ENC FRAGSIZE      ENC: 0 PvmDataDefault, 1 PvmDataRaw, 2 PvmDataInPlace
 *   TYPE CNT STRIDE V...        TYPE: byte short ushort int uint long ulong (decimal values,
 *                               two's complement 64-bit),
 *                               float cplx (hex bit patterns of 32-bit words),
 *                               double dcplx (hex bit patterns of 64-bit words);
 *                               (CNT-1)*STRIDE+1 elements follow (cplx/dcplx: two words each)
 *   str HEX                     pvm_pkstr of the bytes HEX ("-" for the empty string)
 *   mesg                        pvm_pkmesg of the previous case's message
 *   end                         dump this case
 *   load HEX                    pvm_upkmesg of a pvm_pkmesg image (native ints, as dumped below):
 *                               the message becomes the receive buffer
 *   upk TYPE CNT STRIDE         unpack into a zeroed array; prints "val RC V..." (the CNT selected
 *                               elements, in the input formats)
 *   upkstr                      prints "val RC HEX" of pvm_upkstr
 * For every case it prints "dump NAME RC HEX": RC is the first non-zero pack return code (or 0),
 * HEX the PvmDataRaw image of pvm_pkmesg(case message), i.e. len ctx tag wid enc crc src dst and
 * then "int fraglen, bytes" per fragment, all native. The fragments are the library's own; only
 * public calls are used. Run with MALLOC_PERTURB_ set to control the uninitialised (pad) bytes.
 * Packed arrays are never freed: in-place fragments point at them until the process exits.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pvm3.h>

static int hexval(int c)
{
	if (c >= '0' && c <= '9') return c - '0';
	if (c >= 'a' && c <= 'f') return c - 'a' + 10;
	return -1;
}

static void dump(const char *name, int rc, int mid)
{
	int d, len = 0, tag, tid, i;
	unsigned char *b;

	d = pvm_mkbuf(PvmDataRaw);
	pvm_setsbuf(d);
	if (pvm_pkmesg(mid) < 0) {
		printf("dump %s %d -\n", name, rc);
		return;
	}
	pvm_bufinfo(d, &len, &tag, &tid);
	pvm_setrbuf(d);
	b = malloc(len + 1);
	pvm_upkbyte((char *)b, len, 1);
	printf("dump %s %d ", name, rc);
	for (i = 0; i < len; i++)
		printf("%02x", b[i]);
	printf("\n");
	free(b);
	pvm_setrbuf(0);
	pvm_freebuf(d);
}

int main(void)
{
	char word[64], name[64];
	int enc, fs, curfs = 4080, mid = 0, prev = 0, rc = 0, cnt, std, n, i, cc;

	while (scanf("%63s", word) == 1) {
		if (!strcmp(word, "case")) {
			if (scanf("%63s %d %d", name, &enc, &fs) != 3)
				return 2;
			if (fs != curfs) {
				pvm_setopt(PvmFragSize, fs);
				curfs = fs;
			}
			mid = pvm_mkbuf(enc);
			pvm_setsbuf(mid);
			rc = 0;
			continue;
		}
		if (!strcmp(word, "end")) {
			dump(name, rc, mid);
			fflush(stdout);
			if (prev > 0)
				pvm_freebuf(prev);
			prev = mid;
			continue;
		}
		if (!strcmp(word, "mesg")) {
			pvm_setsbuf(mid);
			cc = pvm_pkmesg(prev);
			if (cc && !rc) rc = cc;
			continue;
		}
		if (!strcmp(word, "load")) {
			static char hex[4000000];
			unsigned char *b;
			int r;
			if (scanf("%3999999s", hex) != 1)
				return 2;
			n = (int)strlen(hex) / 2;
			b = malloc(n + 1);
			for (i = 0; i < n; i++)
				b[i] = (unsigned char)(hexval(hex[2 * i]) * 16 + hexval(hex[2 * i + 1]));
			r = pvm_mkbuf(PvmDataRaw);
			pvm_setsbuf(r);
			pvm_pkbyte((char *)b, n, 1);
			pvm_setrbuf(r);
			cc = pvm_upkmesg();
			pvm_setrbuf(cc > 0 ? cc : 0);
			free(b);
			printf("loaded %d\n", cc);
			continue;
		}
		if (!strcmp(word, "upkstr")) {
			static char str[200000];
			memset(str, 0, sizeof str);
			cc = pvm_upkstr(str);
			printf("val %d ", cc);
			for (i = 0; str[i]; i++)
				printf("%02x", (unsigned char)str[i]);
			printf("%s\n", str[0] ? "" : "-");
			continue;
		}
		if (!strcmp(word, "upk")) {
			char type[16];
			if (scanf("%15s %d %d", type, &cnt, &std) != 3)
				return 2;
			n = cnt > 0 ? (cnt - 1) * std + 1 : 0;
#define UPK_INTS(T, FMT, CAST, UPK) do { \
				T *v = calloc(n + 1, sizeof(T)); cc = UPK((void *)v, cnt, std); printf("val %d", cc); \
				for (i = 0; i < cnt; i++) { printf(FMT, (CAST)v[i * std]); } printf("\n"); free(v); \
			} while (0)
#define UPK_BITS(T, W, K, UPK) do { \
				W *v = calloc((size_t)(n + 1) * K, sizeof(W)); cc = UPK((void *)v, cnt, std); printf("val %d", cc); \
				for (i = 0; i < cnt; i++) { int k; for (k = 0; k < K; k++) printf(" %llx", (unsigned long long)v[i * std * K + k]); } \
				printf("\n"); free(v); \
			} while (0)
			if (!strcmp(type, "byte")) UPK_INTS(unsigned char, " %lld", long long, pvm_upkbyte);
			else if (!strcmp(type, "short")) UPK_INTS(short, " %lld", long long, pvm_upkshort);
			else if (!strcmp(type, "ushort")) UPK_INTS(unsigned short, " %lld", long long, pvm_upkushort);
			else if (!strcmp(type, "int")) UPK_INTS(int, " %lld", long long, pvm_upkint);
			else if (!strcmp(type, "uint")) UPK_INTS(unsigned int, " %lld", long long, pvm_upkuint);
			else if (!strcmp(type, "long")) UPK_INTS(long, " %lld", long long, pvm_upklong);
			else if (!strcmp(type, "ulong")) UPK_INTS(unsigned long, " %lld", long long, pvm_upkulong);
			else if (!strcmp(type, "float")) UPK_BITS(float, unsigned int, 1, pvm_upkfloat);
			else if (!strcmp(type, "double")) UPK_BITS(double, unsigned long long, 1, pvm_upkdouble);
			else if (!strcmp(type, "cplx")) UPK_BITS(float, unsigned int, 2, pvm_upkcplx);
			else if (!strcmp(type, "dcplx")) UPK_BITS(double, unsigned long long, 2, pvm_upkdcplx);
			else return 3;
			fflush(stdout);
			continue;
		}
		if (!strcmp(word, "str")) {
			char hex[200000];
			char *s;
			if (scanf("%199999s", hex) != 1)
				return 2;
			n = strcmp(hex, "-") ? (int)strlen(hex) / 2 : 0;
			s = malloc(n + 1);
			for (i = 0; i < n; i++)
				s[i] = (char)(hexval(hex[2 * i]) * 16 + hexval(hex[2 * i + 1]));
			s[n] = 0;
			pvm_setsbuf(mid);
			cc = pvm_pkstr(s);
			if (cc && !rc) rc = cc;
			free(s);
			continue;
		}
		if (scanf("%d %d", &cnt, &std) != 2)
			return 2;
		n = cnt > 0 ? (cnt - 1) * std + 1 : 0;
		pvm_setsbuf(mid);
#define READ_INTS(T, FMT, PK) do { \
			T *v = calloc(n + 1, sizeof(T)); long long x; \
			for (i = 0; i < n; i++) { if (scanf(FMT, &x) != 1) return 2; v[i] = (T)x; } \
			cc = PK(v, cnt, std); \
		} while (0)
#define READ_BITS(T, W, K, PK) do { \
			W *v = calloc((size_t)(n + 1) * K, sizeof(W)); unsigned long long x; \
			for (i = 0; i < n * K; i++) { if (scanf("%llx", &x) != 1) return 2; v[i] = (W)x; } \
			cc = PK((T *)v, cnt, std); \
		} while (0)
		if (!strcmp(word, "byte")) READ_INTS(char, "%lld", pvm_pkbyte);
		else if (!strcmp(word, "short")) READ_INTS(short, "%lld", pvm_pkshort);
		else if (!strcmp(word, "ushort")) READ_INTS(unsigned short, "%lld", pvm_pkushort);
		else if (!strcmp(word, "int")) READ_INTS(int, "%lld", pvm_pkint);
		else if (!strcmp(word, "uint")) READ_INTS(unsigned int, "%lld", pvm_pkuint);
		else if (!strcmp(word, "long")) READ_INTS(long, "%lld", pvm_pklong);
		else if (!strcmp(word, "ulong")) READ_INTS(unsigned long, "%lld", pvm_pkulong);
		else if (!strcmp(word, "float")) READ_BITS(float, unsigned int, 1, pvm_pkfloat);
		else if (!strcmp(word, "double")) READ_BITS(double, unsigned long long, 1, pvm_pkdouble);
		else if (!strcmp(word, "cplx")) READ_BITS(float, unsigned int, 2, pvm_pkcplx);
		else if (!strcmp(word, "dcplx")) READ_BITS(double, unsigned long long, 2, pvm_pkdcplx);
		else return 3;
		if (cc && !rc) rc = cc;
	}
	return 0;
}
