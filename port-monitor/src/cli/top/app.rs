//! What `top` shows and how keys change it, with no terminal in sight: sorting, the selected
//! namespace (kept across refreshes and re-sorts by its id, so it does not jump to another
//! namespace under the user's finger), the list or one namespace's details.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::{
    cli::{namespace::NamespaceStatus, status::NodeStatus},
    model::NetnsId,
};

/// The column the list is sorted by, descending but for the name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SortKey {
    MaxRatio,
    TimeWait,
    PortsInUse,
    Name,
}

impl SortKey {
    /// As the header names it.
    #[must_use]
    pub const fn label(self) -> &'static str {
        match self {
            Self::MaxRatio => "max ratio",
            Self::TimeWait => "TIME_WAIT",
            Self::PortsInUse => "ports in use",
            Self::Name => "name",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    List,
    /// One namespace: its destinations, NAT and counters.
    Details,
}

/// Rows a page key moves.
const PAGE: usize = 10;

pub struct App {
    pub node: Option<NodeStatus>,
    pub sort: SortKey,
    pub view: View,
    selected: Option<NetnsId>,
    pub quit: bool,
}

impl App {
    #[must_use]
    pub const fn new() -> Self {
        Self {
            node: None,
            sort: SortKey::MaxRatio,
            view: View::List,
            selected: None,
            quit: false,
        }
    }

    /// A fresh reading of the node.
    pub fn update(&mut self, node: NodeStatus) {
        self.node = Some(node);
        let rows = self.rows();
        let still_there = self
            .selected
            .is_some_and(|netns| rows.iter().any(|row| row.netns == netns));
        if !still_there {
            // The selected namespace went away: back to the list's top.
            self.selected = rows.first().map(|row| row.netns);
            self.view = View::List;
        }
    }

    /// The namespaces in the chosen order.
    #[must_use]
    pub fn rows(&self) -> Vec<&NamespaceStatus> {
        let Some(node) = &self.node else {
            return Vec::new();
        };
        let mut rows: Vec<&NamespaceStatus> = node.namespaces.iter().collect();
        // The node arrives sorted by max ratio; a stable sort keeps that as the tie-break.
        match self.sort {
            SortKey::MaxRatio => {}
            SortKey::TimeWait => rows.sort_by_key(|row| std::cmp::Reverse(row.time_wait)),
            SortKey::PortsInUse => rows.sort_by_key(|row| std::cmp::Reverse(row.ephemeral_in_use)),
            SortKey::Name => rows.sort_by(|a, b| a.name.cmp(&b.name)),
        }
        rows
    }

    /// Where the selection is in [`App::rows`].
    #[must_use]
    pub fn selected_index(&self) -> Option<usize> {
        let netns = self.selected?;
        self.rows().iter().position(|row| row.netns == netns)
    }

    /// The selected namespace.
    #[must_use]
    pub fn selected(&self) -> Option<&NamespaceStatus> {
        let netns = self.selected?;
        self.node
            .as_ref()?
            .namespaces
            .iter()
            .find(|row| row.netns == netns)
    }

    pub fn handle(&mut self, key: KeyEvent) {
        let control_c =
            key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
        match (self.view, key.code) {
            _ if control_c => self.quit = true,
            (_, KeyCode::Char('q')) | (View::List, KeyCode::Esc) => self.quit = true,
            (View::Details, KeyCode::Esc | KeyCode::Backspace | KeyCode::Left) => {
                self.view = View::List;
            }
            (_, KeyCode::Char('r')) => self.sort = SortKey::MaxRatio,
            (_, KeyCode::Char('t')) => self.sort = SortKey::TimeWait,
            (_, KeyCode::Char('p')) => self.sort = SortKey::PortsInUse,
            (_, KeyCode::Char('n')) => self.sort = SortKey::Name,
            (View::List, KeyCode::Enter | KeyCode::Right) if self.selected.is_some() => {
                self.view = View::Details;
            }
            (View::List, KeyCode::Up | KeyCode::Char('k')) => self.move_by(-1),
            (View::List, KeyCode::Down | KeyCode::Char('j')) => self.move_by(1),
            (View::List, KeyCode::PageUp) => self.move_by(-isize::try_from(PAGE).unwrap_or(1)),
            (View::List, KeyCode::PageDown) => self.move_by(isize::try_from(PAGE).unwrap_or(1)),
            (View::List, KeyCode::Home) => self.move_to(0),
            (View::List, KeyCode::End) => self.move_to(usize::MAX),
            _ => {}
        }
    }

    fn move_by(&mut self, rows: isize) {
        let from = self.selected_index().unwrap_or(0);
        self.move_to(from.saturating_add_signed(rows));
    }

    fn move_to(&mut self, index: usize) {
        let rows = self.rows();
        if let Some(last) = rows.len().checked_sub(1) {
            self.selected = Some(rows[index.min(last)].netns);
        }
    }
}

#[cfg(test)]
mod tests {
    use ratatui::crossterm::event::KeyEventKind;

    use super::*;

    fn namespace(netns: NetnsId, name: &str, ratio: f64, time_wait: u64) -> NamespaceStatus {
        NamespaceStatus {
            time_wait,
            utilization_max_ratio: ratio,
            ..NamespaceStatus::example(netns, name)
        }
    }

    fn node(namespaces: Vec<NamespaceStatus>) -> NodeStatus {
        NodeStatus::example(namespaces)
    }

    fn press(app: &mut App, code: KeyCode) {
        app.handle(KeyEvent::new_with_kind(
            code,
            KeyModifiers::NONE,
            KeyEventKind::Press,
        ));
    }

    fn order(app: &App) -> Vec<NetnsId> {
        app.rows().iter().map(|row| row.netns).collect()
    }

    #[test]
    fn keys_sort_and_the_selection_follows_its_namespace() {
        let mut app = App::new();
        app.update(node(vec![
            namespace(1, "b", 0.9, 5),
            namespace(2, "c", 0.5, 50),
            namespace(3, "a", 0.1, 10),
        ]));
        assert_eq!(order(&app), [1, 2, 3], "closest to running out first");
        assert_eq!(app.selected().map(|row| row.netns), Some(1));
        press(&mut app, KeyCode::Char('t'));
        assert_eq!((app.sort, order(&app)), (SortKey::TimeWait, vec![2, 3, 1]));
        assert_eq!(app.selected_index(), Some(2), "still namespace 1");
        press(&mut app, KeyCode::Char('n'));
        assert_eq!(order(&app), [3, 1, 2]);
        press(&mut app, KeyCode::Up);
        press(&mut app, KeyCode::Up);
        assert_eq!(
            app.selected().map(|row| row.netns),
            Some(3),
            "stops at the top"
        );
        press(&mut app, KeyCode::End);
        assert_eq!(app.selected().map(|row| row.netns), Some(2));
    }

    #[test]
    fn enter_shows_details_and_escape_goes_back_then_quits() {
        let mut app = App::new();
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.view, View::List, "nothing to show yet");
        app.update(node(vec![
            namespace(1, "a", 0.1, 0),
            namespace(2, "b", 0.0, 0),
        ]));
        press(&mut app, KeyCode::Down);
        press(&mut app, KeyCode::Enter);
        assert_eq!(app.view, View::Details);
        assert_eq!(app.selected().map(|row| row.netns), Some(2));
        // The namespace goes away: back to the list.
        app.update(node(vec![namespace(1, "a", 0.1, 0)]));
        assert_eq!((app.view, app.selected_index()), (View::List, Some(0)));
        press(&mut app, KeyCode::Enter);
        press(&mut app, KeyCode::Esc);
        assert!(!app.quit && app.view == View::List);
        press(&mut app, KeyCode::Esc);
        assert!(app.quit);
    }
}
