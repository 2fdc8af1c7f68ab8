//! The HTML part of a mail: the notification's HTML rendering, with its results table turned into a real
//! `<table>` of every epoch so far (mail has room for it), line breaks kept, and the inline loss curve.
//!
//! Every run-supplied string reaching the document is escaped: the rendering arrives escaped from
//! `herald_plugin::render`, and the names and numbers this module adds go through
//! [`herald_plugin::render::escape_html`]. Only inline styles are used: mail clients drop `<style>` blocks.

use herald_event::format::{column_names, float6, format_time};
use herald_plugin::Notification;
use herald_plugin::render::escape_html;

/// A mail shows at most this many epochs (the latest).
pub const MAX_ROWS: usize = 500;

const CELL: &str = "padding:2px 10px;text-align:right;border-bottom:1px solid #ddd";

/// The whole HTML document for one notification; `with_image` adds the inline loss curve.
pub fn document(n: &Notification, with_image: bool) -> String {
    let mut body = String::new();
    let mut rest = n.html.as_str();
    while let Some(start) = rest.find("<pre>") {
        body.push_str(&prose(&rest[..start]));
        let after = &rest[start + "<pre>".len()..];
        let end = after.find("</pre>").unwrap_or(after.len());
        let block = &after[..end];
        if block.starts_with("epoch ") && !n.run.epochs.is_empty() {
            body.push_str(&results_table(n));
        } else {
            body.push_str(&format!(
                "<pre style=\"font-family:monospace;background:#f6f6f6;padding:8px;overflow-x:auto\">{block}</pre>\n"
            ));
        }
        rest = after.get(end + "</pre>".len()..).unwrap_or("");
    }
    body.push_str(&prose(rest));
    if with_image {
        body.push_str(&format!(
            "<p><img src=\"cid:{}\" alt=\"loss curve\" style=\"max-width:100%\"></p>\n",
            crate::IMAGE_CID
        ));
    }
    format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title></head>\n\
         <body style=\"font-family:Helvetica,Arial,sans-serif;font-size:14px;color:#222\">\n{body}\
         <p style=\"color:#888;font-size:12px\">Sent by Herald for run {run}.</p>\n</body></html>\n",
        title = escape_html(&n.title),
        run = escape_html(&n.event.run),
    )
}

/// Already-escaped prose: newlines become `<br>`, blank edges dropped.
fn prose(html: &str) -> String {
    let html = html.trim_matches('\n');
    if html.is_empty() {
        return String::new();
    }
    format!("<p>{}</p>\n", html.replace('\n', "<br>\n"))
}

/// The results table of every epoch so far (the latest [`MAX_ROWS`]).
pub fn results_table(n: &Notification) -> String {
    let metrics = n.run.table_metric_names();
    let mut out =
        String::from("<table style=\"border-collapse:collapse;font-family:monospace;font-size:13px\">\n<tr>");
    for name in column_names(&metrics) {
        out.push_str(&format!(
            "<th style=\"{CELL};border-bottom:2px solid #888\">{}</th>",
            escape_html(&name)
        ));
    }
    out.push_str("</tr>\n");
    let skipped = n.run.epochs.len().saturating_sub(MAX_ROWS);
    if skipped > 0 {
        out.push_str(&format!(
            "<tr><td colspan=\"{}\" style=\"{CELL}\">({skipped} earlier epochs not shown)</td></tr>\n",
            metrics.len() + 4
        ));
    }
    for e in &n.run.epochs[skipped..] {
        let mut cells =
            vec![e.epoch.to_string(), float6(e.train_loss), e.valid_loss.map_or("#na#".into(), float6)];
        cells.extend(metrics.iter().map(|m| e.metrics.get(m).map_or("#na#".into(), float6)));
        cells.push(format_time(e.elapsed_s));
        out.push_str("<tr>");
        for cell in cells {
            out.push_str(&format!("<td style=\"{CELL}\">{}</td>", escape_html(&cell)));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use herald_event::{EpochEnded, Event, Metrics, RunFailed, RunStarted};
    use herald_plugin::{RunContext, render};

    use super::*;

    fn ctx(name: &str, metric: &str) -> RunContext {
        let started = RunStarted {
            name: name.into(),
            host: "gpu".into(),
            pid: 1,
            rank: 0,
            job: None,
            world_size: None,
            n_epochs: 2,
            batches_per_epoch: 10,
            metric_names: vec![metric.into()],
            hyper: Default::default(),
        };
        RunContext::from_started("r<1>", &started)
    }

    fn epoch(n: u32, metric: &str) -> EpochEnded {
        EpochEnded {
            epoch: n,
            n_epochs: 2,
            train_loss: 0.25,
            valid_loss: None,
            metrics: Metrics(vec![(metric.into(), 0.5)]),
            elapsed_s: 61.0,
        }
    }

    #[test]
    fn table_replaces_the_pre_block_and_escapes() {
        let context = ctx("<b>net</b>", "acc<&>");
        let n = render::notification(&context, &Event::now("r<1>", 1, epoch(0, "acc<&>")), None, None, 1);
        let doc = document(&n, false);
        assert!(doc.contains("<th style=\"") && doc.contains(">acc&lt;&amp;&gt;</th>"), "{doc}");
        assert!(
            doc.contains(">0.250000</td>") && doc.contains(">#na#</td>") && doc.contains(">01:01</td>"),
            "{doc}"
        );
        assert!(!doc.contains("<pre"), "the table is a real table: {doc}");
        assert!(doc.contains("&lt;b&gt;net&lt;/b&gt;") && !doc.contains("<b>net"), "{doc}");
        assert!(doc.contains("for run r&lt;1&gt;."), "{doc}");
        assert!(!doc.contains("cid:"));
    }

    #[test]
    fn traceback_stays_preformatted_and_image_is_inline() {
        let mut context = ctx("net", "acc");
        context.apply(&Event::now("r<1>", 1, epoch(0, "acc")));
        let failed = RunFailed { error: "boom".into(), traceback: Some("File \"x.py\"\n  <lambda>".into()) };
        let n = render::notification(&context, &Event::now("r<1>", 2, failed), None, None, 1);
        let doc = document(&n, true);
        assert!(doc.contains("<table"), "{doc}");
        assert!(doc.contains("File &quot;x.py&quot;\n  &lt;lambda&gt;</pre>"), "{doc}");
        assert!(doc.contains("<img src=\"cid:loss-curve@herald\""), "{doc}");
    }
}
