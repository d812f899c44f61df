//! `marunochi stats`: per language and week, what became of the suggestions, the retention curve,
//! the quality distribution and the drift events — as a terminal view with sparklines and bars,
//! or a self-contained HTML report (inline SVG, no scripts, nothing fetched).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Band;
use crate::store::{AdapterVersion, DriftEvent, SourceMetrics, Store, StoreError, WeekMetrics};

pub struct Stats {
    pub weeks: Vec<WeekMetrics>,
    /// Language → (check label, mean survival, judged), in schedule order.
    pub retention: BTreeMap<String, Vec<(String, f64, usize)>>,
    /// Language → count per band, excellent first.
    pub bands: BTreeMap<String, [usize; 5]>,
    pub drift: Vec<DriftEvent>,
    /// Trained adapters, their state and the eval gate's verdict.
    pub adapters: Vec<AdapterVersion>,
    /// Per language and context source, what became of the suggestions it went into.
    pub sources: Vec<SourceMetrics>,
    /// Per language: taken code with a score, how much is excellent, the best score (the pool of
    /// `own_examples`).
    pub example_pool: Vec<(String, usize, usize, f64)>,
    /// Per language: training examples each selection rule admits (`super::admit`, before the
    /// held-out split), and `git`: functions mined from the user's history.
    pub training_data: BTreeMap<String, BTreeMap<String, usize>>,
    /// The bar those rules were applied at.
    pub training_bar: f64,
}

const BANDS: [Band; 5] = [Band::Excellent, Band::Good, Band::Acceptable, Band::Poor, Band::Bad];

/// The stats of the store at `db`; training data counted as curation would admit it at `bar`
/// (`[curate] min_quality`, `seed_score_only`).
pub fn load(db: &std::path::Path, bar: f64, seed_score_only: bool) -> Result<Stats, StoreError> {
    collect(&Store::open(db)?, bar, seed_score_only)
}

pub fn collect(store: &Store, bar: f64, seed_score_only: bool) -> Result<Stats, StoreError> {
    let mut training_data: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
    for row in store.curation_rows()? {
        if let Some(rule) = super::admit(&row.inputs, bar, seed_score_only) {
            *training_data.entry(row.language).or_default().entry(rule.as_str().to_owned()).or_default() += 1;
        }
    }
    // A function mined in several versions trains once (its newest).
    let mut functions = std::collections::BTreeSet::new();
    for f in store.git_functions()? {
        if functions.insert((f.language.clone(), f.repository, f.file_path, f.name)) {
            *training_data.entry(f.language).or_default().entry("git".to_owned()).or_default() += 1;
        }
    }
    let mut retention: BTreeMap<String, Vec<(String, f64, usize)>> = BTreeMap::new();
    for (language, label, survival, judged) in store.retention_curve()? {
        retention.entry(language).or_default().push((label, survival, judged));
    }
    let order = |label: &str| crate::store::CHECKS.iter().position(|(l, _)| *l == label);
    retention.values_mut().for_each(|curve| curve.sort_by_key(|(label, ..)| order(label)));
    let mut bands: BTreeMap<String, [usize; 5]> = BTreeMap::new();
    for (language, score) in store.quality_scores()? {
        let band = Band::of(score);
        bands.entry(language).or_default()[BANDS.iter().position(|b| *b == band).unwrap_or(4)] += 1;
    }
    Ok(Stats {
        weeks: store.weekly_metrics()?,
        retention,
        bands,
        drift: store.drift_events()?,
        adapters: store.adapter_versions(None)?,
        sources: store.source_metrics()?,
        example_pool: store.example_pool()?,
        training_data,
        training_bar: bar,
    })
}

/// `score 3, observed 12, git 40`: training examples per selection rule.
pub fn rule_counts(counts: &BTreeMap<String, usize>) -> String {
    if counts.is_empty() {
        return "none admitted".into();
    }
    counts.iter().map(|(rule, n)| format!("{rule} {n}")).collect::<Vec<_>>().join(", ")
}

/// `python: score 3, observed 12, git 40`, one line per language.
pub fn training_lines(stats: &Stats) -> Vec<String> {
    stats
        .training_data
        .iter()
        .map(|(language, rules)| {
            let label = if language.is_empty() { "(unknown language)" } else { language };
            format!("{label}: {}", rule_counts(rules))
        })
        .collect()
}

fn training_heading(stats: &Stats) -> String {
    format!(
        "Training data (examples each rule admits at quality {}, before the held-out split; git: functions \
         mined from your history)",
        stats.training_bar
    )
}

fn percent(part: usize, whole: usize) -> String {
    if whole == 0 { "–".into() } else { format!("{:.0}%", 100.0 * part as f64 / whole as f64) }
}

/// One week's row: week, shown, the share of each outcome, errors among taken, mean quality.
fn cells(w: &WeekMetrics) -> [String; 9] {
    [
        w.week.clone(),
        w.decided.to_string(),
        percent(w.accepted, w.decided),
        percent(w.partial, w.decided),
        percent(w.corrected, w.decided),
        percent(w.rejected, w.decided),
        percent(w.ignored, w.decided),
        percent(w.errors, w.taken()),
        w.mean_quality.map_or("–".into(), |q| format!("{q:.0}")),
    ]
}

fn sparkline(values: &[f64]) -> String {
    const TICKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    values.iter().map(|v| TICKS[((v.clamp(0.0, 1.0) * 7.0).round()) as usize]).collect()
}

fn bar(value: f64, width: usize) -> String {
    let filled = (value.clamp(0.0, 1.0) * width as f64).round() as usize;
    format!("{}{}", "█".repeat(filled), "·".repeat(width - filled))
}

fn languages(stats: &Stats) -> Vec<String> {
    let mut all: Vec<String> = stats.weeks.iter().map(|w| w.language.clone()).collect();
    all.dedup();
    all
}

/// The terminal view.
pub fn render_terminal(stats: &Stats) -> String {
    let mut out = String::new();
    if stats.weeks.is_empty() {
        out.push_str("No suggestions decided yet: use marunochi in your editor for a while.\n");
        training_terminal(stats, &mut out);
        adapters_terminal(stats, &mut out);
        return out;
    }
    for language in languages(stats) {
        let label = if language.is_empty() { "(unknown language)" } else { &language };
        let weeks: Vec<&WeekMetrics> = stats.weeks.iter().filter(|w| w.language == language).collect();
        let acceptance: Vec<f64> =
            weeks.iter().map(|w| if w.decided == 0 { 0.0 } else { w.taken() as f64 / w.decided as f64 }).collect();
        let _ = writeln!(out, "{label}  acceptance by week {}", sparkline(&acceptance));
        let _ = writeln!(
            out,
            "  {:<9} {:>6} {:>9} {:>8} {:>10} {:>9} {:>8} {:>7} {:>8}",
            "week", "shown", "accepted", "partial", "corrected", "rejected", "ignored", "errors", "quality"
        );
        for w in &weeks {
            let [week, shown, accepted, partial, corrected, rejected, ignored, errors, quality] = cells(w);
            let _ = writeln!(
                out,
                "  {week:<9} {shown:>6} {accepted:>9} {partial:>8} {corrected:>10} {rejected:>9} {ignored:>8} {errors:>7} {quality:>8}"
            );
        }
        if let Some(curve) = stats.retention.get(&language) {
            let _ = writeln!(out, "  retention (mean share of accepted code still there)");
            for (check, survival, judged) in curve {
                let _ = writeln!(out, "    {check:>4} {} {:>4.0}%  ({judged})", bar(*survival, 30), survival * 100.0);
            }
        }
        sources_terminal(stats, &language, &mut out);
        if let Some(bands) = stats.bands.get(&language) {
            let total: usize = bands.iter().sum();
            let _ = writeln!(out, "  quality");
            for (band, count) in BANDS.iter().zip(bands) {
                let share = *count as f64 / total.max(1) as f64;
                let _ = writeln!(out, "    {:<10} {} {count}", format!("{band:?}").to_lowercase(), bar(share, 30));
            }
        }
        out.push('\n');
    }
    if stats.drift.is_empty() {
        out.push_str("No drift events.\n");
    } else {
        out.push_str("Drift events\n");
        for e in &stats.drift {
            let _ = writeln!(out, "  {} {:<12} {}{}", e.week, e.language, e.kind, describe(e));
        }
    }
    training_terminal(stats, &mut out);
    adapters_terminal(stats, &mut out);
    out
}

fn training_terminal(stats: &Stats, out: &mut String) {
    if stats.training_data.is_empty() {
        return;
    }
    let _ = writeln!(out, "{}", training_heading(stats));
    for line in training_lines(stats) {
        let _ = writeln!(out, "  {line}");
    }
}

/// What the few-shot examples are drawn from: the excellent code, or the best there is.
fn example_pool_line(stats: &Stats, language: &str) -> Option<String> {
    let (_, taken, excellent, best) = stats.example_pool.iter().find(|(l, ..)| l == language)?;
    Some(if *excellent > 0 {
        format!("own examples: {excellent} excellent (quality ≥ 90) of {taken} taken")
    } else {
        format!("own examples: none reach quality 90 yet; the best of {taken} taken stand in (up to {best:.0})")
    })
}

/// Acceptance per context source (a suggestion counts under each source its prompt had).
fn sources_terminal(stats: &Stats, language: &str, out: &mut String) {
    if let Some(line) = example_pool_line(stats, language) {
        let _ = writeln!(out, "  {line}");
    }
    let rows: Vec<&SourceMetrics> = stats.sources.iter().filter(|s| s.language == language).collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "  context sources   {:>6} {:>7} {:>12}", "shown", "taken", "kept 7 days");
    for s in rows {
        let _ = writeln!(
            out,
            "    {:<15} {:>6} {:>7} {:>12}",
            s.source,
            s.decided,
            percent(s.taken, s.decided),
            percent(s.survived_7d, s.judged_7d)
        );
    }
}

fn adapters_terminal(stats: &Stats, out: &mut String) {
    if !stats.adapters.is_empty() {
        out.push_str("Adapters\n");
        for a in &stats.adapters {
            let _ = writeln!(out, "  {:<12} {:<5} {:<12} {}", a.language, a.version, a.state, gate(a));
        }
    }
}

/// The eval gate's verdict on an adapter, in a line.
fn gate(a: &AdapterVersion) -> String {
    match (a.gate_passed, &a.gate_report) {
        (Some(passed), Some(report)) => format!("gate {}: {report}", if passed { "passed" } else { "failed" }),
        (Some(passed), None) => format!("gate {}", if passed { "passed" } else { "failed" }),
        (None, _) => "not judged yet".into(),
    }
}

fn describe(e: &DriftEvent) -> String {
    match (e.kind.as_str(), e.value, e.baseline) {
        ("new_language", Some(n), _) => format!(" ({n:.0} suggestions)"),
        ("quality_drop", Some(v), Some(b)) => format!(" (mean {v:.0}, was {b:.0})"),
        (_, Some(v), Some(b)) => format!(" ({:.0}%, was {:.0}%)", v * 100.0, b * 100.0),
        (_, Some(v), None) => format!(" ({:.0}%)", v * 100.0),
        _ => String::new(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Horizontal bars as inline SVG: one labelled bar per (label, share 0..1, caption).
fn svg_bars(rows: &[(String, f64, String)]) -> String {
    let height = rows.len() * 22 + 4;
    let mut svg = format!(r#"<svg xmlns="http://www.w3.org/2000/svg" width="520" height="{height}" role="img">"#);
    for (i, (label, share, caption)) in rows.iter().enumerate() {
        let y = i * 22 + 2;
        let width = (share.clamp(0.0, 1.0) * 300.0).round();
        let _ = write!(
            svg,
            r##"<text x="0" y="{}" font-size="13">{}</text><rect x="110" y="{y}" width="{width}" height="16" fill="#4a7bd0"/><text x="{}" y="{}" font-size="12">{}</text>"##,
            y + 13,
            escape(label),
            120.0 + width,
            y + 13,
            escape(caption)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// The self-contained HTML report.
pub fn render_html(stats: &Stats) -> String {
    let mut body = String::new();
    for language in languages(stats) {
        let label = if language.is_empty() { "(unknown language)" } else { &language };
        let _ = write!(body, "<h2>{}</h2>", escape(label));
        let weeks: Vec<&WeekMetrics> = stats.weeks.iter().filter(|w| w.language == language).collect();
        let acceptance: Vec<(String, f64, String)> = weeks
            .iter()
            .map(|w| {
                let share = w.taken() as f64 / w.decided.max(1) as f64;
                (w.week.clone(), share, format!("{} of {} taken", w.taken(), w.decided))
            })
            .collect();
        let _ = write!(body, "<h3>Acceptance by week</h3>{}", svg_bars(&acceptance));
        body.push_str("<table><tr><th>week</th><th>shown</th><th>accepted</th><th>partial</th><th>corrected</th><th>rejected</th><th>ignored</th><th>errors</th><th>quality</th></tr>");
        for w in &weeks {
            body.push_str("<tr>");
            for cell in cells(w) {
                let _ = write!(body, "<td>{}</td>", escape(&cell));
            }
            body.push_str("</tr>");
        }
        body.push_str("</table>");
        if let Some(curve) = stats.retention.get(&language) {
            let rows: Vec<(String, f64, String)> = curve
                .iter()
                .map(|(check, survival, judged)| {
                    (check.clone(), *survival, format!("{:.0}% ({judged})", survival * 100.0))
                })
                .collect();
            let _ = write!(body, "<h3>Retention</h3>{}", svg_bars(&rows));
        }
        if let Some(line) = example_pool_line(stats, &language) {
            let _ = write!(body, "<p>{}</p>", escape(&line));
        }
        let sources: Vec<&SourceMetrics> = stats.sources.iter().filter(|s| s.language == language).collect();
        if !sources.is_empty() {
            body.push_str("<h3>Context sources</h3><table><tr><th>source</th><th>shown</th><th>taken</th><th>kept 7 days</th></tr>");
            for s in sources {
                let _ = write!(
                    body,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&s.source),
                    s.decided,
                    percent(s.taken, s.decided),
                    percent(s.survived_7d, s.judged_7d)
                );
            }
            body.push_str("</table>");
        }
        if let Some(bands) = stats.bands.get(&language) {
            let total = bands.iter().sum::<usize>().max(1) as f64;
            let rows: Vec<(String, f64, String)> = BANDS
                .iter()
                .zip(bands)
                .map(|(band, n)| (format!("{band:?}").to_lowercase(), *n as f64 / total, n.to_string()))
                .collect();
            let _ = write!(body, "<h3>Quality</h3>{}", svg_bars(&rows));
        }
    }
    if !stats.training_data.is_empty() {
        let _ = write!(body, "<h2>Training data</h2><p>{}</p><ul>", escape(&training_heading(stats)));
        for line in training_lines(stats) {
            let _ = write!(body, "<li>{}</li>", escape(&line));
        }
        body.push_str("</ul>");
    }
    body.push_str("<h2>Drift events</h2>");
    if stats.drift.is_empty() {
        body.push_str("<p>None.</p>");
    } else {
        body.push_str("<table><tr><th>week</th><th>language</th><th>event</th></tr>");
        for e in &stats.drift {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                escape(&e.week),
                escape(&e.language),
                escape(&e.kind),
                escape(&describe(e))
            );
        }
        body.push_str("</table>");
    }
    if !stats.adapters.is_empty() {
        body.push_str("<h2>Adapters and the eval gate</h2><table><tr><th>language</th><th>version</th><th>state</th><th>gate</th></tr>");
        for a in &stats.adapters {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td style=\"text-align:left\">{}</td></tr>",
                escape(&a.language),
                escape(&a.version),
                escape(a.state.as_str()),
                escape(&gate(a))
            );
        }
        body.push_str("</table>");
    }
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>marunochi stats</title><style>\
         body{{font-family:sans-serif;max-width:60em;margin:2em auto}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}</style></head>\
         <body><h1>marunochi: your suggestions</h1>{body}</body></html>\n"
    )
}
