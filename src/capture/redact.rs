//! Secrets are cut out of everything before it is stored for training: well-known token formats,
//! private keys, `password = "..."`-style assignments, high-entropy strings, and the values of
//! `.env` files. A redaction reads `«redacted:kind»`, so a training example still shows that
//! something was there.

use std::sync::LazyLock;

use regex::Regex;

struct Rule {
    kind: &'static str,
    pattern: Regex,
    /// The capture group holding the secret (0: the whole match).
    group: usize,
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |kind, pattern: &str, group| Rule { kind, pattern: Regex::new(pattern).expect("valid pattern"), group };
    vec![
        rule("private-key", r"(?s)-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(-----END [A-Z ]*PRIVATE KEY-----|\z)", 0),
        rule("aws-key", r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", 0),
        rule("github-token", r"\b(gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b", 0),
        rule("slack-token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}\b", 0),
        rule("openai-key", r"\bsk-[A-Za-z0-9_-]{20,}\b", 0),
        rule("google-key", r"\bAIza[0-9A-Za-z_-]{35}\b", 0),
        rule("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b", 0),
        rule("url-password", r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]+:([^/\s@]+)@", 1),
        rule(
            "assignment",
            r#"(?i)\b[\w.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|auth)[\w.-]*["']?\s*[:=]\s*["']([^"'\s]{6,})["']"#,
            1,
        ),
    ]
});

/// Long runs of token-like characters: checked for entropy.
static CANDIDATES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[A-Za-z0-9+/=_-]{24,}").expect("valid pattern"));

/// `text` with every secret replaced. `path` is the file it comes from (`.env` files lose all values).
pub fn redact(text: &str, path: &str) -> String {
    let mut out = text.to_owned();
    if is_env_file(path) {
        out = redact_env(&out);
    }
    for rule in RULES.iter() {
        out = replace_group(&out, &rule.pattern, rule.group, rule.kind);
    }
    let mut result = String::with_capacity(out.len());
    let mut last = 0;
    for m in CANDIDATES.find_iter(&out) {
        if looks_random(m.as_str()) {
            result.push_str(&out[last..m.start()]);
            result.push_str("«redacted:high-entropy»");
            last = m.end();
        }
    }
    result.push_str(&out[last..]);
    result
}

fn replace_group(text: &str, pattern: &Regex, group: usize, kind: &str) -> String {
    let mut result = String::with_capacity(text.len());
    let mut last = 0;
    for captures in pattern.captures_iter(text) {
        let Some(secret) = captures.get(group) else { continue };
        if text[secret.start()..secret.end()].starts_with("«redacted") {
            continue;
        }
        result.push_str(&text[last..secret.start()]);
        result.push_str(&format!("«redacted:{kind}»"));
        last = secret.end();
    }
    result.push_str(&text[last..]);
    result
}

fn is_env_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path);
    name == ".env" || name.starts_with(".env.") || name.ends_with(".env")
}

/// Every `KEY=value` line keeps its key only.
fn redact_env(text: &str) -> String {
    text.split_inclusive('\n')
        .map(|line| {
            let trimmed = line.trim_start();
            match line.split_once('=') {
                Some((key, value)) if !trimmed.starts_with('#') && !value.trim().is_empty() => {
                    let newline = if line.ends_with('\n') { "\n" } else { "" };
                    format!("{key}=«redacted:env»{newline}")
                }
                _ => line.to_owned(),
            }
        })
        .collect()
}

/// Shannon entropy over 4.3 bits per character with letters and digits mixed: keys and tokens, not
/// identifiers (`very_long_function_name_here` has low entropy) or words.
fn looks_random(s: &str) -> bool {
    let has_digit = s.bytes().any(|b| b.is_ascii_digit());
    let has_upper = s.bytes().any(|b| b.is_ascii_uppercase());
    let has_lower = s.bytes().any(|b| b.is_ascii_lowercase());
    if !(has_digit && has_lower && has_upper) {
        return false;
    }
    let mut counts = [0usize; 256];
    for b in s.bytes() {
        counts[b as usize] += 1;
    }
    let n = s.len() as f64;
    let entropy: f64 = counts.iter().filter(|&&c| c > 0).map(|&c| -(c as f64 / n) * (c as f64 / n).log2()).sum();
    entropy > 4.3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_token_formats() {
        let text = "aws = 'AKIAIOSFODNN7EXAMPLE'\ngh = ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789\n\
                    slack = xoxb-1234567890-abcdefghij\nkey = sk-proj-abcdefghijklmnopqrstuvwx\n";
        let out = redact(text, "config.py");
        for secret in ["AKIAIOSFODNN7EXAMPLE", "ghp_aBcD", "xoxb-1234", "sk-proj-abc"] {
            assert!(!out.contains(secret), "{secret} survived: {out}");
        }
        assert!(out.contains("aws = '«redacted:aws-key»'"), "{out}");
    }

    #[test]
    fn private_keys_and_assignments() {
        let key = "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----\n";
        assert_eq!(redact(key, "id_rsa"), "«redacted:private-key»\n");
        let out = redact("DB_PASSWORD = \"hunter22!\"\napi_key: 'abcdef123'\ncount = 3\n", "settings.py");
        assert_eq!(out, "DB_PASSWORD = \"«redacted:assignment»\"\napi_key: '«redacted:assignment»'\ncount = 3\n");
        let url = redact("url = 'postgres://admin:s3cretpw@db:5432/app'", "a.py");
        assert_eq!(url, "url = 'postgres://admin:«redacted:url-password»@db:5432/app'");
    }

    #[test]
    fn high_entropy_strings_but_not_code() {
        let out = redact("token = \"q8ZpK2vN7xR4tY1wB9mC3dF6gH0jL5sA\"", "a.py");
        assert!(out.contains("«redacted"), "{out}");
        let code = "def very_long_function_name_for_testing(argument_number_one):\n    return fibonacci(n - 1)\n";
        assert_eq!(redact(code, "a.py"), code);
        let path = "from marunochi.engine.prompt import build_the_prompt_for_everything";
        assert_eq!(redact(path, "a.py"), path);
    }

    #[test]
    fn env_files_keep_keys_only() {
        let env = "# comment\nDATABASE_URL=postgres://x\nDEBUG=1\nEMPTY=\n";
        assert_eq!(redact(env, "/p/.env"), "# comment\nDATABASE_URL=«redacted:env»\nDEBUG=«redacted:env»\nEMPTY=\n");
        assert_eq!(redact("A=1\n", "/p/settings.py"), "A=1\n");
    }
}
