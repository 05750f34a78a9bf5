//! Packing with stride 0 (every element is the first one, as the legacy encoders' pointer
//! arithmetic gives): our library streams the copies in bounded chunks instead of building them;
//! the message bytes, fragment by fragment, must stay those of the legacy library. The bytes
//! are read back through pvm_pkmesg into a raw buffer, which exposes each fragment as is.

use interop_tests::shim::{Lib, Vm};
use interop_tests::Kind;
use std::path::Path;
use std::process::Command;

const PACK_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <pvm3.h>
/* FNV-1a over the fragments of message `mid`, with their lengths. */
static void dump(const char *what, int mid)
{
	int hdr[8], n = 0, len, total = 0, outer = pvm_mkbuf(PvmDataRaw), save;
	unsigned long h = 1469598103934665603UL;
	char *b;
	save = pvm_setsbuf(outer);
	pvm_pkmesg(mid);
	pvm_setsbuf(save);
	save = pvm_setrbuf(outer);
	pvm_upkint(hdr, 8, 1);
	while (pvm_upkint(&len, 1, 1) == 0) {
		b = malloc(len > 0 ? len : 1);
		pvm_upkbyte(b, len, 1);
		for (int i = 0; i < len; i++) { h ^= (unsigned char)b[i]; h *= 1099511628211UL; }
		free(b);
		n++; total += len;
	}
	printf("%s len=%d frags=%d fnv=%lx\n", what, total, n, h);
	pvm_setrbuf(save);
	pvm_freebuf(outer);
}
int main(void)
{
	char c = 'x'; short s = -3; int i = 0x01020304; long l = 77; float f = 1.25;
	double d = -2.5; float cx[2] = {1, 2}; double dz[2] = {3, 4};
	int enc[2] = {PvmDataDefault, PvmDataRaw}, e, mid;
	pvm_setopt(PvmAutoErr, 0);
	if (pvm_mytid() < 0) return 1;
	for (e = 0; e < 2; e++) {
		mid = pvm_initsend(enc[e]);
		pvm_pkbyte(&c, 10001, 0); pvm_pkshort(&s, 4097, 0); pvm_pkint(&i, 3001, 0);
		pvm_pklong(&l, 1025, 0); pvm_pkfloat(&f, 2049, 0); pvm_pkdouble(&d, 1500, 0);
		pvm_pkcplx(cx, 1100, 0); pvm_pkdcplx(dz, 1030, 0); pvm_pkbyte(&c, 3, 0);
		pvm_pkint(&i, 0, 0);
		dump(e ? "raw" : "xdr", mid);
	}
	pvm_exit();
	return 0;
}
"#;

fn compile(dir: &Path) -> std::path::PathBuf {
    let c = dir.join("pack0.c");
    std::fs::write(&c, PACK_C).expect("write pack0.c");
    let out = dir.join("pack0");
    let r = Command::new("gcc")
        .args(["-std=c99", "-o"])
        .arg(&out)
        .arg(&c)
        .arg("-lpvm3")
        .output()
        .unwrap_or_else(|e| panic!("gcc is required for this test: {e}"));
    assert!(r.status.success(), "gcc: {}", String::from_utf8_lossy(&r.stderr));
    out
}

#[test]
fn shim_stride_zero_packing_is_byte_identical_to_legacy() {
    let mut outs = Vec::new();
    for lib in [Lib::Legacy, Lib::Shim] {
        let vm = Vm::start(Kind::Legacy, "lb-pack0");
        let prog = compile(vm.tmp.path());
        let (code, out, err) = vm.run(prog.to_str().unwrap(), &[], lib, lib, None);
        assert_eq!(code, Some(0), "{lib:?}: {out}\n{err}");
        assert_eq!(out.lines().count(), 2, "{lib:?}: {out}\n{err}");
        outs.push(out);
    }
    // Several fragments each (the default fragment size is 4 KB), so chunk boundaries and
    // fragment boundaries both occur.
    assert!(outs[0].contains("frags="), "{}", outs[0]);
    assert!(!outs[0].contains("frags=1 "), "expected several fragments: {}", outs[0]);
    assert_eq!(outs[0], outs[1], "legacy vs ours");
}
