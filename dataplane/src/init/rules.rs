//! The redirect rules as data: what `weft-proxy init` asks iptables for, computed by pure
//! functions so they can be read and tested without a network namespace.

use std::fmt;
use std::str::FromStr;

/// The chain that inbound TCP (from `PREROUTING`) goes through.
pub const INBOUND_CHAIN: &str = "WEFT_INBOUND";
/// The chain that outbound TCP (from `OUTPUT`) goes through.
pub const OUTBOUND_CHAIN: &str = "WEFT_OUTBOUND";

/// A TCP port or an inclusive range of them, as written in `--skip-*-ports` (`25`, `6000-6010`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortRange {
    /// First port.
    pub first: u16,
    /// Last port (equal to `first` for a single port).
    pub last: u16,
}

impl PortRange {
    /// A single port.
    pub fn single(port: u16) -> Self {
        Self { first: port, last: port }
    }

    /// The `--dport` value iptables takes: `25` or `6000:6010`.
    fn dport(self) -> String {
        if self.first == self.last { self.first.to_string() } else { format!("{}:{}", self.first, self.last) }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

/// A port list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a port or port range (1-65535, e.g. 25 or 6000-6010): {reason}")]
pub struct PortRangeError {
    /// What was given.
    pub input: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let error = |reason| PortRangeError { input: s.to_string(), reason };
        let port = |p: &str| match p.trim().parse::<u16>() {
            Ok(0) => Err(error("port 0 is not a port")),
            Ok(p) => Ok(p),
            Err(_) => Err(error("not a number")),
        };
        let (first, last) = match s.split_once(['-', ':']) {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(s)?;
                (p, p)
            }
        };
        if first > last {
            return Err(error("the range's first port is above its last"));
        }
        Ok(Self { first, last })
    }
}

/// Parses a comma-separated list of ports and ranges (`25,587,6000-6010`); empty gives none.
pub fn parse_port_list(s: &str) -> Result<Vec<PortRange>, PortRangeError> {
    s.split(',').map(str::trim).filter(|p| !p.is_empty()).map(str::parse).collect()
}

/// What the redirection must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Redirect {
    /// The proxy's inbound listener: inbound TCP is redirected here (4143).
    pub inbound_port: u16,
    /// The proxy's outbound listener: outbound TCP is redirected here (4140).
    pub outbound_port: u16,
    /// The uid the proxy runs as: its own connections are never redirected (that would loop).
    pub proxy_uid: u32,
    /// Inbound ports that reach the app directly (the proxy's admin port belongs here).
    pub skip_inbound_ports: Vec<PortRange>,
    /// Outbound destination ports the app reaches directly, bypassing the proxy.
    pub skip_outbound_ports: Vec<PortRange>,
}

impl Default for Redirect {
    fn default() -> Self {
        Self {
            inbound_port: 4143,
            outbound_port: 4140,
            proxy_uid: 2102,
            skip_inbound_ports: vec![PortRange::single(4191)],
            skip_outbound_ports: Vec::new(),
        }
    }
}

fn args(parts: &[&str]) -> Vec<String> {
    parts.iter().map(|s| (*s).to_string()).collect()
}

fn comment(text: &str) -> [&str; 4] {
    ["-m", "comment", "--comment", text]
}

impl Redirect {
    /// The `nat` table rules, in order, each as the arguments `iptables -t nat` takes:
    /// `-N CHAIN` creates a chain, `-A CHAIN ...` appends a rule.
    ///
    /// Inbound: `PREROUTING` sends TCP to `WEFT_INBOUND`, which lets the skipped ports and the
    /// inbound port itself through and redirects everything else to the inbound port.
    /// Outbound: `OUTPUT` sends TCP to `WEFT_OUTBOUND`, which lets through the proxy's own
    /// traffic (by uid), traffic over loopback (the app talking to itself, the proxy handing
    /// requests to the app) and the skipped ports, and redirects the rest to the outbound port.
    pub fn nat_rules(&self) -> Vec<Vec<String>> {
        let mut rules = vec![args(&["-N", INBOUND_CHAIN]), args(&["-N", OUTBOUND_CHAIN])];

        let inbound = self.inbound_port.to_string();
        let mut skip_in = self.skip_inbound_ports.clone();
        skip_in.push(PortRange::single(self.inbound_port));
        skip_in.sort();
        skip_in.dedup();
        for range in skip_in {
            let dport = range.dport();
            let mut rule = args(&["-A", INBOUND_CHAIN, "-p", "tcp", "--dport", &dport]);
            rule.extend(args(&comment("weft: skip inbound port")));
            rule.extend(args(&["-j", "RETURN"]));
            rules.push(rule);
        }
        let mut redirect_in = args(&["-A", INBOUND_CHAIN, "-p", "tcp"]);
        redirect_in.extend(args(&comment("weft: inbound to the proxy")));
        redirect_in.extend(args(&["-j", "REDIRECT", "--to-ports", &inbound]));
        rules.push(redirect_in);

        let uid = self.proxy_uid.to_string();
        let mut own = args(&["-A", OUTBOUND_CHAIN, "-m", "owner", "--uid-owner", &uid]);
        own.extend(args(&comment("weft: the proxy's own traffic")));
        own.extend(args(&["-j", "RETURN"]));
        rules.push(own);
        let mut lo = args(&["-A", OUTBOUND_CHAIN, "-o", "lo"]);
        lo.extend(args(&comment("weft: loopback")));
        lo.extend(args(&["-j", "RETURN"]));
        rules.push(lo);
        let mut skip_out = self.skip_outbound_ports.clone();
        skip_out.sort();
        skip_out.dedup();
        for range in skip_out {
            let dport = range.dport();
            let mut rule = args(&["-A", OUTBOUND_CHAIN, "-p", "tcp", "--dport", &dport]);
            rule.extend(args(&comment("weft: skip outbound port")));
            rule.extend(args(&["-j", "RETURN"]));
            rules.push(rule);
        }
        let outbound = self.outbound_port.to_string();
        let mut redirect_out = args(&["-A", OUTBOUND_CHAIN, "-p", "tcp"]);
        redirect_out.extend(args(&comment("weft: outbound to the proxy")));
        redirect_out.extend(args(&["-j", "REDIRECT", "--to-ports", &outbound]));
        rules.push(redirect_out);

        rules.push(args(&["-A", "PREROUTING", "-p", "tcp", "-j", INBOUND_CHAIN]));
        rules.push(args(&["-A", "OUTPUT", "-p", "tcp", "-j", OUTBOUND_CHAIN]));
        rules
    }

    /// The input for `iptables-restore --noflush` that installs [`Self::nat_rules`], given what
    /// `iptables-save -t nat` prints now.
    ///
    /// Declaring weft's chains empties them, so re-running (an init container restarted in the
    /// same pod) replaces their rules rather than doubling them; the jumps from `PREROUTING` and
    /// `OUTPUT` are left out when `current` already has them. Other chains are not touched.
    pub fn restore_input(&self, current: &str) -> String {
        let mut out = String::from("*nat\n");
        for rule in self.nat_rules() {
            match rule.as_slice() {
                [new, chain] if new == "-N" => out.push_str(&format!(":{chain} - [0:0]\n")),
                [append, chain, ..] if append == "-A" && has_jump(current, chain, &rule) => {}
                _ => {
                    let line: Vec<String> = rule.iter().map(|a| quote(a)).collect();
                    out.push_str(&line.join(" "));
                    out.push('\n');
                }
            }
        }
        out.push_str("COMMIT\n");
        out
    }
}

/// Whether `save` (iptables-save output) already has the jump `rule` adds from a built-in chain
/// to one of weft's. Rules inside weft's own chains are always rewritten.
fn has_jump(save: &str, chain: &str, rule: &[String]) -> bool {
    if chain == INBOUND_CHAIN || chain == OUTBOUND_CHAIN {
        return false;
    }
    let Some(target) = rule.last() else { return false };
    let prefix = format!("-A {chain} ");
    save.lines().any(|l| l.starts_with(&prefix) && l.split_whitespace().last() == Some(target.as_str()))
}

/// Quotes an argument that iptables-restore would otherwise split.
fn quote(arg: &str) -> String {
    if arg.contains(char::is_whitespace) { format!("\"{arg}\"") } else { arg.to_string() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn lines(rules: &[Vec<String>]) -> Vec<String> {
        rules.iter().map(|r| r.join(" ")).collect()
    }

    #[test]
    fn default_rules_redirect_inbound_to_4143_and_outbound_to_4140() {
        let got = lines(&Redirect::default().nat_rules());
        let want = [
            "-N WEFT_INBOUND",
            "-N WEFT_OUTBOUND",
            "-A WEFT_INBOUND -p tcp --dport 4143 -m comment --comment weft: skip inbound port -j RETURN",
            "-A WEFT_INBOUND -p tcp --dport 4191 -m comment --comment weft: skip inbound port -j RETURN",
            "-A WEFT_INBOUND -p tcp -m comment --comment weft: inbound to the proxy -j REDIRECT --to-ports 4143",
            "-A WEFT_OUTBOUND -m owner --uid-owner 2102 -m comment --comment weft: the proxy's own traffic -j RETURN",
            "-A WEFT_OUTBOUND -o lo -m comment --comment weft: loopback -j RETURN",
            "-A WEFT_OUTBOUND -p tcp -m comment --comment weft: outbound to the proxy -j REDIRECT --to-ports 4140",
            "-A PREROUTING -p tcp -j WEFT_INBOUND",
            "-A OUTPUT -p tcp -j WEFT_OUTBOUND",
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn skip_ports_return_before_the_redirect_and_the_proxy_uid_is_exempt() {
        let r = Redirect {
            inbound_port: 14143,
            outbound_port: 14140,
            proxy_uid: 0,
            skip_inbound_ports: parse_port_list("9090, 4191,9090").unwrap(),
            skip_outbound_ports: parse_port_list("5432,6000-6010").unwrap(),
        };
        let rules = r.nat_rules();
        let pos = |needle: &str| rules.iter().position(|r| r.join(" ").contains(needle)).unwrap();
        // Each skipped port returns once, before its chain's redirect.
        let inbound_skips: Vec<_> = rules
            .iter()
            .filter(|r| r[1] == INBOUND_CHAIN && r.last().unwrap() == "RETURN")
            .map(|r| r[5].clone())
            .collect();
        assert_eq!(inbound_skips, ["4191", "9090", "14143"]);
        assert!(pos("--dport 9090") < pos("--to-ports 14143"));
        assert!(pos("--dport 5432") < pos("--to-ports 14140"));
        assert!(pos("--dport 6000:6010") < pos("--to-ports 14140"));
        assert!(pos("--uid-owner 0") < pos("--to-ports 14140"));
        assert!(pos("-o lo") < pos("--to-ports 14140"));
        // The jumps come last, once the chains are complete.
        assert_eq!(rules[rules.len() - 2].join(" "), "-A PREROUTING -p tcp -j WEFT_INBOUND");
        assert_eq!(rules[rules.len() - 1].join(" "), "-A OUTPUT -p tcp -j WEFT_OUTBOUND");
    }

    #[test]
    fn restore_input_declares_chains_quotes_comments_and_skips_existing_jumps() {
        let fresh = Redirect::default().restore_input("*nat\n:PREROUTING ACCEPT [0:0]\nCOMMIT\n");
        assert!(fresh.starts_with("*nat\n:WEFT_INBOUND - [0:0]\n:WEFT_OUTBOUND - [0:0]\n"), "{fresh}");
        assert!(fresh.contains("--comment \"weft: loopback\" -j RETURN\n"), "{fresh}");
        assert!(fresh.contains("-A PREROUTING -p tcp -j WEFT_INBOUND\n"), "{fresh}");
        assert!(fresh.contains("-A OUTPUT -p tcp -j WEFT_OUTBOUND\n"), "{fresh}");
        assert!(fresh.ends_with("COMMIT\n"));

        // What iptables-save prints after a first run (it normalises `-p tcp` into `-m tcp`).
        let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:WEFT_INBOUND - [0:0]\n\
                     -A PREROUTING -p tcp -j WEFT_INBOUND\n-A OUTPUT -p tcp -j WEFT_OUTBOUND\n\
                     -A WEFT_INBOUND -p tcp -m tcp --dport 4191 -j RETURN\nCOMMIT\n";
        let again = Redirect::default().restore_input(saved);
        assert!(!again.contains("-A PREROUTING"), "{again}");
        assert!(!again.contains("-A OUTPUT"), "{again}");
        // weft's own chains are emptied and rewritten.
        assert!(again.contains(":WEFT_INBOUND - [0:0]\n"));
        assert!(again.contains("-A WEFT_INBOUND -p tcp --dport 4191"));
    }

    #[test]
    fn port_lists_parse_single_ports_and_ranges_and_refuse_nonsense() {
        assert_eq!(
            parse_port_list("25, 6000-6010,7000:7001,").unwrap(),
            [
                PortRange::single(25),
                PortRange { first: 6000, last: 6010 },
                PortRange { first: 7000, last: 7001 }
            ]
        );
        assert_eq!(parse_port_list("").unwrap(), []);
        for bad in ["0", "65536", "http", "10-5", "1-"] {
            let e = parse_port_list(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{bad}: {e}");
        }
        assert_eq!(PortRange { first: 1, last: 2 }.to_string(), "1-2");
    }
}
