//! Screenshots of `pvmtrace html` pages in headless Chromium, and pixel counts read from the
//! PNG with python3's zlib (no PNG crate): what the diagram tests check a page shows.

use std::path::Path;
use std::process::Command;

/// Pixel counts of a screenshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pixels {
    pub width: u64,
    pub height: u64,
    /// Not white (lanes, text, arrows, marks).
    pub dark: u64,
    /// The red of message arrows.
    pub red: u64,
    /// The orange of migration/checkpoint marks.
    pub orange: u64,
}

/// Renders `html` in headless Chromium (1200x400) into `dir/shot.png` and counts its pixels.
/// Panics when Chromium or python3 is missing (ci/setup installs them) or made no picture.
pub fn screenshot(html: &Path, dir: &Path) -> Pixels {
    let chromium = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find(|c| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("command -v {c}"))
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .unwrap_or_else(|| {
            panic!("chromium is required for this test (apt-get install chromium; ci/setup installs it)")
        });
    let png = dir.join("shot.png");
    let profile = dir.join("chromium-profile");
    let mut c = Command::new("timeout");
    c.args([
        "-k",
        "5",
        "90",
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
    ])
    .args([
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
    ])
    .arg(format!("--user-data-dir={}", profile.display()))
    .arg(format!("--screenshot={}", png.display()))
    .arg("--window-size=1200,400")
    .arg(format!("file://{}", html.display()));
    let out = c.output().expect("run chromium");
    assert!(
        png.exists(),
        "chromium made no screenshot: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py = r#"
import sys, zlib, struct
d = open(sys.argv[1], 'rb').read()
assert d[:8] == b'\x89PNG\r\n\x1a\n'
i = 8; idat = b''; w = h = 0
while i < len(d):
    n, t = struct.unpack('>I4s', d[i:i+8]); c = d[i+8:i+8+n]; i += 12 + n
    if t == b'IHDR': w, h, bd, ct = struct.unpack('>IIBB', c[:10])
    if t == b'IDAT': idat += c
raw = zlib.decompress(idat); bpp = 4 if ct == 6 else 3
stride = w * bpp; prev = bytearray(stride); dark = red = orange = 0; p = 0
for y in range(h):
    f = raw[p]; line = bytearray(raw[p+1:p+1+stride]); p += 1 + stride
    for x in range(stride):
        a = line[x-bpp] if x >= bpp else 0; b = prev[x]; c = prev[x-bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            pa, pb, pc = abs(b - c), abs(a - c), abs(a + b - 2 * c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        r, g, bl = line[x], line[x+1], line[x+2]
        if r + g + bl < 600: dark += 1
        if r > 150 and g < 110 and bl < 110: red += 1
        if r > 200 and 120 < g < 215 and bl < 140: orange += 1
    prev = line
print(w, h, dark, red, orange)
"#;
    let o = Command::new("python3")
        .arg("-c")
        .arg(py)
        .arg(&png)
        .output()
        .expect("python3 is required to read the PNG");
    let s = String::from_utf8_lossy(&o.stdout).to_string();
    let v: Vec<u64> = s.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    assert_eq!(
        v.len(),
        5,
        "PNG check failed: {s} {}",
        String::from_utf8_lossy(&o.stderr)
    );
    Pixels {
        width: v[0],
        height: v[1],
        dark: v[2],
        red: v[3],
        orange: v[4],
    }
}
