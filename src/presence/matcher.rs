//! Trigger words: does an event's summary hold one of a profile's triggers?
//!
//! Both sides are compared in Unicode's compatibility-caseless form (NFKD after case folding,
//! twice, per Unicode's definition), so `LUNCH`, `Lunch` and `ｌｕｎｃｈ` are one word, and `ß`
//! meets `ss`. Words are runs of letters and digits (any script: å, ä, ö, é, ü are letters),
//! with their combining marks; everything else — spaces, punctuation, emoji — separates words.
//! A trigger matches whole words; a phrase matches consecutive words whatever separates them;
//! `*` at the start of a trigger lets its first word be the end of a longer word (`*möte`
//! matches `kundmöte`), at the end lets its last word be the start of one (`lunch*` matches
//! `lunchmöte`).

use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// The caseless, compatibility-normalised form of `s`.
fn fold(s: &str) -> String {
    let once: String = caseless::default_case_fold_str(&s.nfd().collect::<String>()).nfkd().collect();
    caseless::default_case_fold_str(&once).nfkd().collect()
}

/// The words of `s` (already folded).
fn words(folded: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (i, c) in folded.char_indices() {
        let letter = c.is_alphanumeric();
        let continues = start.is_some() && is_combining_mark(c);
        match (start, letter || continues) {
            (None, true) if letter => start = Some(i),
            (Some(s), false) => {
                out.push(&folded[s..i]);
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        out.push(&folded[s..]);
    }
    out
}

/// A trigger, prepared for matching.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// The trigger as the admin wrote it (what `cause.trigger` reports).
    pub text: String,
    words: Vec<String>,
    open_start: bool,
    open_end: bool,
}

impl Trigger {
    /// `None` for a trigger without letters or digits (validation refuses those anyway).
    pub fn new(text: &str) -> Option<Trigger> {
        let t = text.trim();
        let open_start = t.starts_with('*');
        let open_end = t.ends_with('*') && t.len() > 1;
        let folded = fold(t.trim_matches('*'));
        let words: Vec<String> = words(&folded).into_iter().map(str::to_owned).collect();
        if words.is_empty() {
            return None;
        }
        Some(Trigger { text: t.to_owned(), words, open_start, open_end })
    }

    fn word_matches(&self, i: usize, word: &str) -> bool {
        let want = self.words[i].as_str();
        let last = self.words.len() - 1;
        match (i == 0 && self.open_start, i == last && self.open_end) {
            (true, true) => word.contains(want),
            (true, false) => word.ends_with(want),
            (false, true) => word.starts_with(want),
            (false, false) => word == want,
        }
    }

    /// Whether this trigger occurs in the (prepared) summary.
    pub fn matches(&self, summary: &Summary) -> bool {
        let n = self.words.len();
        summary.words.len() >= n
            && (0..=summary.words.len() - n).any(|s| (0..n).all(|i| self.word_matches(i, &summary.words[s + i])))
    }
}

/// An event summary, prepared once for matching against many triggers.
#[derive(Debug, Clone)]
pub struct Summary {
    words: Vec<String>,
}

impl Summary {
    pub fn new(text: &str) -> Summary {
        Summary { words: words(&fold(text)).into_iter().map(str::to_owned).collect() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(trigger: &str, summary: &str) -> bool {
        Trigger::new(trigger).unwrap().matches(&Summary::new(summary))
    }

    #[test]
    fn table() {
        let cases: &[(&str, &str, bool)] = &[
            // casing
            ("lunch", "LUNCH", true),
            ("lunch", "Lunch: with a customer", true),
            ("Lunch", "lunch", true),
            ("LUNCH", "a late lunch", true),
            // punctuation around and inside
            ("lunch", "lunch-möte", true),
            ("lunch", "(lunch)", true),
            ("lunch", "Lunch!!!", true),
            ("lunch", "\"lunch\", then work", true),
            ("lunch", "kl.12:lunch", true),
            ("möte", "lunch-möte", true),
            ("lunchmöte", "lunch-möte", false),
            ("lunchmöte", "Lunchmöte med kund", true),
            // compounds with and without *
            ("*möte", "Kundmöte", true),
            ("*möte", "lunchmöte", true),
            ("*möte", "möte", true),
            ("möte", "kundmöte", false),
            ("*möte", "mötesrum", false),
            ("möte*", "mötesrum", true),
            ("möte*", "kundmöte", false),
            ("*sjuk*", "Vabb/sjukdag", true),
            ("*sjuk*", "Sjuk", true),
            // letters beyond ASCII are letters
            ("café", "Café with Anna", true),
            ("cafe", "Café with Anna", false),
            ("über", "Übergabe", false),
            ("über*", "Übergabe", true),
            ("straße", "STRASSE closed", true),
            ("semester", "SEMESTER i Åre", true),
            ("åre", "Semester i Åre", true),
            // emoji separate words
            ("lunch", "🍔lunch🍔", true),
            ("lunch", "🍔️ Lunch", true),
            ("lunch", "lunch🥗with team", true),
            // phrases across any whitespace and punctuation
            ("out of office", "Out of office", true),
            ("out of office", "OUT-OF-OFFICE", true),
            ("out of office", "out\tof   office", true),
            ("out of office", "out of the office", false),
            ("on site", "On-site visit", true),
            // near misses
            ("lunch", "Brunch", false),
            ("lunch", "lunchroom booking", false),
            ("lunch", "launch", false),
            ("lunch", "lun ch", false),
            ("lunch", "", false),
            ("möte", "mote", false),
            ("kund möte", "kundmöte", false),
            // digits are word characters
            ("q4", "Q4 review", true),
            ("q4", "Q45 review", false),
        ];
        for (trigger, summary, want) in cases {
            assert_eq!(m(trigger, summary), *want, "trigger {trigger:?} in {summary:?}");
        }
    }

    #[test]
    fn triggers_need_letters() {
        assert!(Trigger::new("*").is_none());
        assert!(Trigger::new("!!").is_none());
        assert_eq!(Trigger::new(" *Möte ").unwrap().text, "*Möte");
    }
}
