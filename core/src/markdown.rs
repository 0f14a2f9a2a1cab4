//! Markdown for GitHub: text from the user's YAML made inert, code spans and fences that hold
//! any text, and bodies clipped under GitHub's limits. The review, the replies to commands and
//! the suggestions all write Markdown through these, so each rule is kept in one place.

use crate::source::one_line;

/// GitHub allows 65 536 characters in a comment or check-run text; this leaves room for what
/// is appended after clipping (a fingerprint, a footer).
pub const MAX_BODY: usize = 65_000;

/// Text from the user's YAML (image names, env names, container names) placed in Markdown:
/// no mentions, links, images, HTML or emphasis can come out of it, and it stays on one line.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(
            c,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '@' | '|' | '!' | '~'
        ) {
            out.push('\\');
        }
        out.push(if c == '\n' { ' ' } else { c });
    }
    out
}

/// A code span that holds any text on one line: fenced with more backticks than it contains,
/// padded when it starts or ends with one.
pub fn code(s: &str) -> String {
    let s = one_line(s);
    let fence = "`".repeat(longest_run(&s, '`') + 1);
    let pad = if s.starts_with('`') || s.ends_with('`') {
        " "
    } else {
        ""
    };
    format!("{fence}{pad}{s}{pad}{fence}")
}

/// The fence of a code block holding `text`: longer than any run of backticks inside, and at
/// least three.
pub fn fence_for(text: &str) -> String {
    "`".repeat((longest_run(text, '`') + 1).max(3))
}

/// A fenced code block (`info` is the language, or `suggestion`), without trailing newlines in
/// its body.
pub fn fenced(text: &str, info: &str) -> String {
    let text = text.trim_end_matches('\n');
    let fence = fence_for(text);
    if text.is_empty() {
        format!("{fence}{info}\n{fence}")
    } else {
        format!("{fence}{info}\n{text}\n{fence}")
    }
}

/// Cut a body to at most `max` bytes (GitHub's limit is [`MAX_BODY`]) on a character boundary,
/// saying so.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(40);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}\n\n…(truncated)", &s[..end])
}

fn longest_run(s: &str, ch: char) -> usize {
    let (mut best, mut run) = (0, 0);
    for c in s.chars() {
        run = if c == ch { run + 1 } else { 0 };
        best = best.max(run);
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_cannot_mention_link_or_break_out() {
        assert_eq!(
            escape("@admins [x](http://e) <img> `a`"),
            "\\@admins \\[x\\](http://e) \\<img\\> \\`a\\`"
        );
        assert_eq!(code("a`b"), "``a`b``");
        assert_eq!(code("`a"), "`` `a ``");
        assert_eq!(code("two\nlines"), "`two lines`");
    }

    #[test]
    fn fences_outgrow_their_content() {
        assert!(fenced("a ``` b", "").starts_with("````\n"));
        assert_eq!(fenced("x\n", "diff"), "```diff\nx\n```");
        assert_eq!(fenced("", "suggestion"), "```suggestion\n```");
    }

    #[test]
    fn clipping_respects_characters() {
        let s = "é".repeat(100);
        let c = clip(&s, 60);
        assert!(c.len() <= 60 + 20 && c.ends_with("…(truncated)"), "{c}");
        assert_eq!(clip("short", 60), "short");
    }
}
