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

/// The words that make a name a secret's name (`DB_PASSWORD`, `apiKey`, `auth_token`).
const SECRET_NAME: &str =
    r"(?:password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|auth|credentials?)";

/// The rules, in order (a later rule skips what an earlier one redacted). Each is tested against
/// positives and look-alike negatives in `tests/fixtures/redaction.tsv`.
static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    let rule = |kind, pattern: &str, group| Rule { kind, pattern: Regex::new(pattern).expect("valid pattern"), group };
    let name = SECRET_NAME;
    vec![
        rule(
            "private-key",
            r"(?s)-----BEGIN [A-Z ]*PRIVATE KEY(?: BLOCK)?-----.*?(-----END [A-Z ]*PRIVATE KEY(?: BLOCK)?-----|\z)",
            0,
        ),
        rule("aws-key", r"\b(AKIA|ASIA)[0-9A-Z]{16}\b", 0),
        rule("github-token", r"\b(gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{40,})\b", 0),
        rule("slack-token", r"\b(?:xox[abprs]|xapp)-[A-Za-z0-9-]{10,}\b", 0),
        rule("slack-webhook", r"https://hooks\.slack\.com/(?:services|workflows|triggers)/[A-Za-z0-9/_-]+", 0),
        rule("openai-key", r"\bsk-[A-Za-z0-9_-]{20,}\b", 0),
        rule("huggingface-token", r"\bhf_[A-Za-z0-9]{30,}\b", 0),
        rule("google-key", r"\bAIza[0-9A-Za-z_-]{35}\b", 0),
        rule("jwt", r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\b", 0),
        rule("url-password", r"[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*:([^/\s@]+)@", 1),
        rule(
            "authorization",
            r#"(?i)\bauthorization["']?\s*[:=]\s*["']?(?:basic|bearer|token|digest)\s+([A-Za-z0-9+/=._~-]{8,})"#,
            1,
        ),
        // `password = "…"`, `"apiKey": "…"`, `os.environ["DB_PASSWORD"] = "…"`: a quoted value
        // (spaces allowed: passphrases) after a secret's name.
        rule("assignment", &format!(r#"(?i)\b[\w.-]*{name}[\w.-]*["']?\]?\s*[:=]\s*["']([^"'\n]{{6,}})["']"#), 1),
        // Shell and env style, unquoted: `export DB_PASSWORD=Summer2024!`, `DB_PASS=…`.
        rule(
            "assignment",
            r"(?m)^\s*(?:export\s+)?[A-Z0-9_]*(?:PASSWORD|PASSWD|PASS|PWD|SECRET|TOKEN|API_?KEY|ACCESS_?KEY|PRIVATE_?KEY|CREDENTIALS?)[A-Z0-9_]*\s*=\s*([^\s'\x22#][^\s#]*)",
            1,
        ),
        // Connection strings: `Server=db;Uid=app;Pwd=…;`.
        rule("assignment", r#"(?i)(?:^|[;\s'"])(?:pwd|password)=([^;\s'"()]+)(?:;|$|['"\s])"#, 1),
        // A hex key of 32–64 digits on a line that names a key (hashes in tests elsewhere stay).
        rule("hex-key", r"(?i)(?:key|token|secret)[^\n]{0,40}?\b([0-9a-f]{32,64})\b", 1),
    ]
});

/// Config files (YAML, TOML, INI, properties): an unquoted value after a secret's name, however
/// short (`password: x`). Code is left to the quoted rules: `password: str` is a type there.
static CONFIG_VALUE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&format!(r##"(?im)^\s*[\w.-]*{SECRET_NAME}[\w.-]*\s*[:=]\s*([^\s'"#][^#\n]*?)\s*$"##))
        .expect("valid pattern")
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
    if is_config_file(path) {
        out = replace_group(&out, &CONFIG_VALUE, 1, "assignment");
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
    name == ".env" || name == ".envrc" || name.starts_with(".env.") || name.ends_with(".env")
}

fn is_config_file(path: &str) -> bool {
    let name = path.rsplit('/').next().unwrap_or(path).to_ascii_lowercase();
    let extension = name.rsplit_once('.').map_or("", |(_, e)| e);
    matches!(extension, "yaml" | "yml" | "toml" | "ini" | "cfg" | "conf" | "properties") || is_env_file(path)
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

/// Runs of letters that read as words: `Account`, `user`, `HTTP`, a short `_ID` after a separator.
static WORDS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[A-Z]?[a-z]{3,}|[A-Z]{4,}|_[A-Z]{2,3}\b|_").expect("valid pattern"));

/// Letters, digits and both cases mixed, with some entropy, and mostly not words: keys and tokens
/// (~97% of random 24-character keys), not identifiers (`getUserAccountSettings2024`,
/// `MAX_RETRIES_FOR_UPLOAD_V2`) or words. An identifier of many short words can be taken for a key;
/// the cost is a lossy training example, not a leak.
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
    let wordy: usize = WORDS.find_iter(s).map(|m| m.len()).sum();
    entropy > 3.6 && (wordy as f64) < 0.55 * n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_corpus_of_secrets_and_look_alikes() {
        let corpus = include_str!("../tests/fixtures/redaction.tsv");
        let mut failures = Vec::new();
        for line in corpus.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
            let fields: Vec<&str> = line.split('\t').collect();
            let [path, text, secret] = fields[..] else { panic!("not three fields: {line}") };
            let text = text.replace("\\n", "\n").replace("\\t", "\t").replace("\\'", "'");
            let out = redact(&text, path);
            if secret.is_empty() && out != text {
                failures.push(format!("{path}: ordinary code changed:\n  {text:?}\n→ {out:?}"));
            } else if !secret.is_empty() && out.contains(secret) {
                failures.push(format!("{path}: {secret:?} survived in {out:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

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
