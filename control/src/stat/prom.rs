//! Reading the Prometheus text exposition format (what weft-proxy's `/metrics` and Envoy's
//! `/stats/prometheus` serve, OpenMetrics' text included): one sample per line, comments
//! and `# EOF` skipped, label values unescaped, a trailing timestamp ignored.

/// One sample: `name{labels} value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The metric name, with its `_total` / `_bucket` / `_count` suffix as written.
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value (`+Inf`, `-Inf` and `NaN` included).
    pub value: f64,
}

impl Sample {
    /// The value of label `key`, if present.
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

/// A line that is not a sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}: {text:?}")]
pub struct PromError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub reason: &'static str,
    /// The line (at most 200 characters).
    pub text: String,
}

/// Every sample of `text`.
pub fn parse(text: &str) -> Result<Vec<Sample>, PromError> {
    let mut samples = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let error =
            |reason| PromError { line: index + 1, reason, text: line.chars().take(200).collect::<String>() };
        samples.push(parse_line(line).map_err(error)?);
    }
    Ok(samples)
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty() {
        return Err("no metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(after) = rest.strip_prefix('{') {
        let (parsed, after) = parse_labels(after)?;
        labels = parsed;
        rest = after;
    }
    let value = rest.split_whitespace().next().ok_or("no value")?;
    let value = match value {
        "+Inf" | "Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        other => other.parse().map_err(|_| "value is not a number")?,
    };
    Ok(Sample { name: name.to_owned(), labels, value })
}

/// Labels up to and including the closing `}`; returns them and what follows.
/// Labels in the order written.
type Labels = Vec<(String, String)>;

fn parse_labels(mut s: &str) -> Result<(Labels, &str), &'static str> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start_matches([' ', ',']);
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = s.find('=').ok_or("label without '='")?;
        let key = s[..eq].trim().to_owned();
        s = s[eq + 1..].trim_start().strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((key, value));
        s = &s[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_weft_proxy_and_envoy_lines() {
        let text = r#"# HELP request Requests.
# TYPE request counter
request_total{direction="inbound",authority="web:8080",tls="true",client_id="spiffe://cluster.local/ns/shop/sa/client"} 12
response_latency_ms_bucket{le="+Inf",direction="inbound"} 3
envoy_cluster_shop_svc_cluster_local_upstream_rq{envoy_response_code="503",envoy_cluster_name="outbound|80||web-v2"} 3
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="x"} 30.344526516143677241643672459759
xds_connected 1 1700000000000
# EOF
"#;
        let samples = parse(text).unwrap();
        assert_eq!(samples.len(), 5);
        assert_eq!(samples[0].name, "request_total");
        assert_eq!(samples[0].label("client_id"), Some("spiffe://cluster.local/ns/shop/sa/client"));
        assert_eq!(samples[0].value, 12.0);
        assert_eq!(samples[1].label("le"), Some("+Inf"));
        assert_eq!(samples[2].label("envoy_cluster_name"), Some("outbound|80||web-v2"));
        assert!((samples[3].value - 30.3445).abs() < 1e-3);
        assert_eq!(samples[4].labels, vec![]);
        assert_eq!(samples[4].value, 1.0);
    }

    #[test]
    fn unescapes_label_values() {
        let samples = parse(r#"m{a="q\"uote",b="back\\slash",c="new\nline", } 1"#).unwrap();
        assert_eq!(samples[0].label("a"), Some("q\"uote"));
        assert_eq!(samples[0].label("b"), Some("back\\slash"));
        assert_eq!(samples[0].label("c"), Some("new\nline"));
    }

    #[test]
    fn bad_lines_are_named() {
        let error = parse("ok 1\nm{a=\"x} 1\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert_eq!(error.reason, "unterminated label value");
        assert_eq!(parse("m{a=\"x\"} one").unwrap_err().reason, "value is not a number");
        assert_eq!(parse("m{a=x} 1").unwrap_err().reason, "label value not quoted");
    }
}
