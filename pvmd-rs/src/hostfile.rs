//! Hostfile parser (startup.md §3): one host per line, `#` comments, `*` default lines,
//! `&` (do not start) and `$` (allow overloading) flags, and `key=value` options.

use thiserror::Error;

/// Longest line the legacy reader accepts.
pub const MAX_LINE: usize = 512;
/// Most words on a line.
pub const MAX_WORDS: usize = 10;
/// Highest host index, so the largest number of host lines.
pub const MAX_HOSTS: usize = 4095;

/// Options a line may set; `None` = not given (defaults fill it in).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostOpts {
    /// `lo=` remote login name.
    pub login: Option<String>,
    /// `so=` start options (`pw`, `ms`).
    pub start_opts: Option<String>,
    /// `dx=` pvmd command on that host.
    pub dpath: Option<String>,
    /// `ep=` task search path.
    pub epath: Option<String>,
    /// `bx=` debugger.
    pub bpath: Option<String>,
    /// `wd=` working directory.
    pub wdir: Option<String>,
    /// `sp=` relative speed.
    pub speed: Option<i32>,
    /// `ip=` name or address to use for the network address.
    pub aname: Option<String>,
    /// `id=` virtual machine id.
    pub vmid: Option<String>,
}

impl HostOpts {
    /// Fills unset options from `d`.
    fn apply_defaults(&mut self, d: &HostOpts) {
        fn fill<T: Clone>(a: &mut Option<T>, b: &Option<T>) {
            if a.is_none() {
                a.clone_from(b);
            }
        }
        fill(&mut self.login, &d.login);
        fill(&mut self.start_opts, &d.start_opts);
        fill(&mut self.dpath, &d.dpath);
        fill(&mut self.epath, &d.epath);
        fill(&mut self.bpath, &d.bpath);
        fill(&mut self.wdir, &d.wdir);
        fill(&mut self.speed, &d.speed);
        fill(&mut self.aname, &d.aname);
        fill(&mut self.vmid, &d.vmid);
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLine {
    pub name: String,
    /// `&`: only supplies options for a later add; not started at boot.
    pub no_start: bool,
    /// `$`: another pvmd on an already configured address is allowed.
    pub overload: bool,
    pub opts: HostOpts,
    /// 1-based line number, for messages.
    pub line: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hostfile {
    pub hosts: Vec<HostLine>,
    /// The last `*` line's options: applied to hosts added later without their own entry.
    pub defaults: HostOpts,
}

impl Hostfile {
    pub fn find(&self, name: &str) -> Option<&HostLine> {
        self.hosts.iter().find(|h| h.name == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HostfileError {
    #[error("hostfile line {line}: line longer than {MAX_LINE} characters")]
    LineTooLong { line: usize },
    #[error("hostfile line {line}: more than {MAX_WORDS} words")]
    TooManyWords { line: usize },
    #[error("hostfile line {line}: unknown option \"{word}\" (line ignored)")]
    UnknownOption { line: usize, word: String },
    #[error("hostfile line {line}: bad value in \"{word}\"")]
    BadValue { line: usize, word: String },
    #[error("hostfile line {line}: no host name")]
    NoName { line: usize },
    #[error("hostfile line {line}: more than {MAX_HOSTS} hosts")]
    TooManyHosts { line: usize },
}

/// Parses one host line (as in a hostfile or a `pvm_addhosts` string) without defaults.
pub fn parse_line(text: &str, line: usize) -> Result<Option<HostLine>, HostfileError> {
    if text.len() > MAX_LINE {
        return Err(HostfileError::LineTooLong { line });
    }
    let trimmed = text.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return Ok(None);
    }
    let mut no_start = false;
    let mut overload = false;
    let mut rest = trimmed;
    loop {
        rest = rest.trim_start();
        if let Some(r) = rest.strip_prefix('&') {
            no_start = true;
            rest = r;
        } else if let Some(r) = rest.strip_prefix('$') {
            overload = true;
            rest = r;
        } else {
            break;
        }
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    if words.len() > MAX_WORDS {
        return Err(HostfileError::TooManyWords { line });
    }
    let Some((name, opts_words)) = words.split_first() else {
        return Err(HostfileError::NoName { line });
    };
    let mut opts = HostOpts::default();
    for w in opts_words {
        let Some((key, val)) = w.split_once('=') else {
            return Err(HostfileError::UnknownOption {
                line,
                word: w.to_string(),
            });
        };
        let v = Some(val.to_string());
        match key {
            "lo" => opts.login = v,
            "so" => opts.start_opts = v,
            "dx" => opts.dpath = v,
            "ep" => opts.epath = v,
            "bx" => opts.bpath = v,
            "wd" => opts.wdir = v,
            "ip" => opts.aname = v,
            "id" => opts.vmid = v,
            "sp" => match val.parse::<i32>() {
                Ok(n) if n > 0 => opts.speed = Some(n),
                _ => {
                    return Err(HostfileError::BadValue {
                        line,
                        word: w.to_string(),
                    })
                }
            },
            _ => {
                return Err(HostfileError::UnknownOption {
                    line,
                    word: w.to_string(),
                })
            }
        }
    }
    Ok(Some(HostLine {
        name: name.to_string(),
        no_start,
        overload,
        opts,
        line,
    }))
}

/// Parses a whole hostfile. Bad lines are reported and skipped (the legacy daemon logs them and
/// goes on), so the result carries both the good lines and the errors.
pub fn parse(text: &str) -> (Hostfile, Vec<HostfileError>) {
    let mut hf = Hostfile::default();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        match parse_line(raw, line) {
            Ok(None) => {}
            Ok(Some(h)) if h.name == "*" => hf.defaults = h.opts,
            Ok(Some(mut h)) => {
                if hf.hosts.len() >= MAX_HOSTS {
                    errors.push(HostfileError::TooManyHosts { line });
                    break;
                }
                h.opts.apply_defaults(&hf.defaults);
                hf.hosts.push(h);
            }
            Err(e) => errors.push(e),
        }
    }
    (hf, errors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_apply_to_following_lines_only() {
        let (hf, errs) = parse(
            "# comment\n\
             early sp=5\n\
             * lo=bob ep=/bin:/usr/bin\n\
             \n\
             &later dx=/opt/pvmd\n\
             $h2 lo=alice ip=10.0.0.2 so=ms wd=/w bx=dbg id=vm7\n",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert_eq!(hf.hosts.len(), 3);
        let early = hf.find("early").unwrap();
        assert_eq!(early.opts.speed, Some(5));
        assert_eq!(early.opts.login, None);
        let later = hf.find("later").unwrap();
        assert!(later.no_start && !later.overload);
        assert_eq!(later.opts.login.as_deref(), Some("bob"));
        assert_eq!(later.opts.epath.as_deref(), Some("/bin:/usr/bin"));
        assert_eq!(later.opts.dpath.as_deref(), Some("/opt/pvmd"));
        let h2 = hf.find("h2").unwrap();
        assert!(h2.overload && !h2.no_start);
        assert_eq!(h2.opts.login.as_deref(), Some("alice"));
        assert_eq!(h2.opts.aname.as_deref(), Some("10.0.0.2"));
        assert_eq!(h2.opts.start_opts.as_deref(), Some("ms"));
        assert_eq!(h2.opts.wdir.as_deref(), Some("/w"));
        assert_eq!(h2.opts.bpath.as_deref(), Some("dbg"));
        assert_eq!(h2.opts.vmid.as_deref(), Some("vm7"));
        assert_eq!(h2.line, 6);
        assert_eq!(hf.defaults.login.as_deref(), Some("bob"));
    }

    #[test]
    fn unknown_key_rejects_the_line_and_names_it() {
        let (hf, errs) = parse("a\nb zz=1\nc\n");
        assert_eq!(hf.hosts.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(
            errs,
            vec![HostfileError::UnknownOption {
                line: 2,
                word: "zz=1".into()
            }]
        );
        assert_eq!(
            errs[0].to_string(),
            "hostfile line 2: unknown option \"zz=1\" (line ignored)"
        );
        let (_, errs) = parse("b plainword\n");
        assert!(matches!(&errs[..], [HostfileError::UnknownOption { line: 1, .. }]));
    }

    #[test]
    fn flags_may_be_separate_or_repeated() {
        let h = parse_line("& $ &x", 1).unwrap().unwrap();
        assert!(h.no_start && h.overload);
        assert_eq!(h.name, "x");
        assert_eq!(parse_line("&", 3), Err(HostfileError::NoName { line: 3 }));
    }

    #[test]
    fn limits() {
        let long = format!("h ep={}", "x".repeat(600));
        assert_eq!(parse_line(&long, 1), Err(HostfileError::LineTooLong { line: 1 }));
        let many = format!("h{}", " lo=a".repeat(10));
        assert_eq!(parse_line(&many, 2), Err(HostfileError::TooManyWords { line: 2 }));
        assert!(matches!(
            parse_line("h sp=fast", 4),
            Err(HostfileError::BadValue { line: 4, .. })
        ));
        let text: String = (0..4100).map(|i| format!("h{i}\n")).collect();
        let (hf, errs) = parse(&text);
        assert_eq!(hf.hosts.len(), MAX_HOSTS);
        assert!(matches!(errs[..], [HostfileError::TooManyHosts { line: 4096 }]));
    }
}
