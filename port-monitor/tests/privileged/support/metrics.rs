//! A scrape, parsed just enough to look series up by name and labels.

use std::collections::BTreeMap;

/// One series: its labels, sorted, and its value.
type Sample = (Vec<(String, String)>, f64);

/// Series of one scrape: name -> (sorted labels, value).
#[derive(Debug, Default)]
pub struct Metrics {
    pub text: String,
    series: BTreeMap<String, Vec<Sample>>,
}

impl Metrics {
    pub fn parse(text: &str) -> Self {
        let mut series: BTreeMap<String, Vec<_>> = BTreeMap::new();
        for line in text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.is_empty())
        {
            let (head, value) = line.rsplit_once(' ').expect("sample line");
            let value: f64 = value.parse().expect("sample value");
            let (name, labels) = match head.split_once('{') {
                Some((name, rest)) => (name, parse_labels(rest.trim_end_matches('}'))),
                None => (head, Vec::new()),
            };
            series
                .entry(name.to_owned())
                .or_default()
                .push((labels, value));
        }
        Self {
            text: text.to_owned(),
            series,
        }
    }

    /// The value of the series `name` whose labels include all of `labels`, if exactly one.
    pub fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .series
            .get(name)?
            .iter()
            .filter(|(have, _)| {
                labels
                    .iter()
                    .all(|(key, value)| have.iter().any(|(k, v)| k == key && v == value))
            })
            .map(|(_, value)| *value)
            .collect();
        (matching.len() == 1).then(|| matching[0])
    }

    /// Like [`Metrics::get`], 0 when absent.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels).unwrap_or(0.0)
    }
}

fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((index, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                }
                '"' => {
                    end = index + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.push((key.trim_start_matches(',').to_owned(), value));
        rest = &after[end..];
    }
    labels.sort();
    labels
}
