//! pvm_packf/pvm_unpackf against the legacy library: every conversion (c, h/l/plain d and u,
//! f and lf, x and lx complex, s), counts and strides written and taken from the arguments
//! (`%5d`, `%3.2d`, `%*d`, `%*.*d`), with and without `%+` (the encoding), separators
//! between conversions. For each format the packed bytes and the values unpacked with the same
//! format are printed; both libraries must print the same, stderr included.

use interop_tests::shim::{same_as_all_legacy, Lib};
use interop_tests::Kind;

const PROGRAM: &str = r#"
#include <stdio.h>
#include <string.h>
#include <pvm3.h>
extern int pvm_errno;
static void bytes(const char *what, int rc)
{
    int mid = pvm_getsbuf(), len = -1, tag, src, i;
    unsigned char b[512];
    printf("%s: packf %d errno %d", what, rc, pvm_errno);
    if (mid > 0 && pvm_bufinfo(mid, &len, &tag, &src) >= 0 && len >= 0 && len <= (int)sizeof b) {
        pvm_setrbuf(mid);
        memset(b, 0, sizeof b);
        pvm_upkbyte((char *)b, len, 1);
        printf(" len %d:", len);
        for (i = 0; i < len; i++) printf("%s%02x", i % 4 ? "" : " ", b[i]);
        /* back to packing then to unpacking: rewound for pvm_unpackf */
        pvm_setsbuf(mid);
        pvm_setrbuf(mid);
    }
    printf("\n");
}
int main(void)
{
    int i, rc, n;
    int ia[12] = { 1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12 }, ib[12];
    short sa[4] = { -1, 2, -300, 4000 }, sb[4];
    long la[3] = { -5000000000L, 6, 7000000000L }, lb[3];
    unsigned long ula[2] = { 1, 0xfffffffffUL }, ulb[2];
    float fa[4] = { 1.5f, -2.25f, 3e10f, 0.0f }, fb[4];
    double da[4] = { 3.141592653589793, -1e-300, 2.5, 1e300 }, db[4];
    char ca[5] = "wxyz", cb[5];
    char s1[64], s2[64];
    char c; short h; int d; long l; unsigned u; unsigned short hu; unsigned long lu; float f; double lf;

    printf("enrolled %d\n", pvm_mytid() > 0);
    for (int enc = 0; enc < 2; enc++) {
        int e = enc ? PvmDataRaw : PvmDataDefault;
        printf("== %s\n", enc ? "raw" : "xdr");

        rc = pvm_packf("%+ %c %hd %d %ld", e, 'A', (short)-3, 7, -9L);
        bytes("scalars", rc);
        c = 0; h = 0; d = 0; l = 0;
        rc = pvm_unpackf("%c %hd %d %ld", &c, &h, &d, &l);
        printf("  unpackf %d: %c %d %d %ld\n", rc, c, h, d, l);

        rc = pvm_packf("%+ %u %hu %lu", e, 4000000000u, (unsigned short)65535, 18000000000UL);
        bytes("unsigned", rc);
        u = 0; hu = 0; lu = 0;
        rc = pvm_unpackf("%u %hu %lu", &u, &hu, &lu);
        printf("  unpackf %d: %u %u %lu\n", rc, u, hu, lu);

        rc = pvm_packf("%+ %f %lf", e, 1.5, 2.718281828459045);
        bytes("floats", rc);
        f = 0; lf = 0;
        rc = pvm_unpackf("%f %lf", &f, &lf);
        printf("  unpackf %d: %.9g %.17g\n", rc, f, lf);

        rc = pvm_packf("%+ %s %s", e, "hello, world", "");
        bytes("strings", rc);
        s1[0] = s2[0] = '?'; s1[1] = s2[1] = 0;
        rc = pvm_unpackf("%s %s", s1, s2);
        printf("  unpackf %d: '%s' '%s'\n", rc, s1, s2);

        rc = pvm_packf("%+ %5d %3.2d", e, ia, ia);
        bytes("arrays", rc);
        memset(ib, 0, sizeof ib);
        rc = pvm_unpackf("%5d %3.2d", ib, ib + 5);
        printf("  unpackf %d:", rc);
        for (i = 0; i < 12; i++) printf(" %d", ib[i]);
        printf("\n");

        n = 4;
        rc = pvm_packf("%+ %*d %*.*d", e, n, ia, 2, 3, ia);
        bytes("counts from args", rc);
        memset(ib, 0, sizeof ib);
        rc = pvm_unpackf("%*d %*.*d", n, ib, 2, 3, ib + 4);
        printf("  unpackf %d:", rc);
        for (i = 0; i < 12; i++) printf(" %d", ib[i]);
        printf("\n");

        rc = pvm_packf("%+ %4hd %3ld %2lu %4f %4lf %4c", e, sa, la, ula, fa, da, ca);
        bytes("typed arrays", rc);
        memset(sb, 0, sizeof sb); memset(lb, 0, sizeof lb); memset(ulb, 0, sizeof ulb);
        memset(fb, 0, sizeof fb); memset(db, 0, sizeof db); memset(cb, 0, sizeof cb);
        rc = pvm_unpackf("%4hd %3ld %2lu %4f %4lf %4c", sb, lb, ulb, fb, db, cb);
        printf("  unpackf %d: %d %d %d %d | %ld %ld %ld | %lu %lu | %.9g %.9g %.9g %.9g | %.17g %.17g %.17g %.17g | %.4s\n",
               rc, sb[0], sb[1], sb[2], sb[3], lb[0], lb[1], lb[2], ulb[0], ulb[1],
               fb[0], fb[1], fb[2], fb[3], db[0], db[1], db[2], db[3], cb);

        rc = pvm_packf("%+ %2x %1lx", e, fa, da);
        bytes("complex", rc);
        memset(fb, 0, sizeof fb); memset(db, 0, sizeof db);
        rc = pvm_unpackf("%2x %1lx", fb, db);
        printf("  unpackf %d: %.9g %.9g %.9g %.9g | %.17g %.17g\n", rc, fb[0], fb[1], fb[2], fb[3], db[0], db[1]);

        /* Without %+: packs into the current send buffer, after what it holds. */
        pvm_initsend(e);
        pvm_pkint(ia, 1, 1);
        rc = pvm_packf("%d,%d;%s", 11, 12, "sep");
        bytes("append, separators", rc);
        d = 0; i = 0; s1[0] = 0;
        rc = pvm_unpackf("%d %d,%d;%s", &n, &d, &i, s1);
        printf("  unpackf %d: %d %d %d '%s'\n", rc, n, d, i, s1);

        /* Unpacking past the end, and a conversion it does not know. */
        rc = pvm_unpackf("%d", &d);
        printf("  unpackf past end %d errno %d\n", rc, pvm_errno);
        rc = pvm_packf("%+ %q", e, 5);
        printf("  packf unknown %d errno %d\n", rc, pvm_errno);
    }
    pvm_exit();
    printf("done\n");
    return 0;
}
"#;

#[test]
fn packf_unpackf_same_as_legacy() {
    same_as_all_legacy(
        &interop_tests::build_c("packf", PROGRAM, &["-w"]),
        &[],
        &[(Kind::Legacy, Lib::Shim)],
        &["scalars: packf 0"],
    );
}
