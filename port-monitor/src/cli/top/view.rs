//! Drawing `top`: a header (what was read, the daemon, the sort), the namespace list or one
//! namespace's details, and a line of keys.

use std::time::Duration;

use ratatui::{
    Frame,
    layout::{Constraint, Flex, Layout, Rect},
    style::{Color, Modifier, Style, Stylize as _},
    text::Line,
    widgets::{Cell, HighlightSpacing, Paragraph, Row, Table, TableState},
};

use super::app::{App, SortKey, View};
use crate::cli::{namespace::NamespaceStatus, render};

pub fn draw(frame: &mut Frame<'_>, app: &App, refresh: Duration) {
    let header = header(app, refresh);
    let [top, body, keys] = Layout::vertical([
        Constraint::Length(u16::try_from(header.len()).unwrap_or(u16::MAX)),
        Constraint::Min(0),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(header), top);
    match (app.view, app.selected()) {
        (View::Details, Some(namespace)) => details(frame, body, namespace),
        _ => list(frame, body, app),
    }
    let help = match app.view {
        View::List => {
            "↑↓ select  Enter destinations  sort: r max ratio  t TIME_WAIT  p ports in use  n name  q quit"
        }
        View::Details => "Esc back  sort: r t p n  q quit",
    };
    frame.render_widget(Paragraph::new(help).reversed(), keys);
}

fn header(app: &App, refresh: Duration) -> Vec<Line<'static>> {
    let Some(node) = &app.node else {
        return vec![Line::from("port-monitor top: reading every namespace…").bold()];
    };
    let mut lines = vec![
        Line::from(format!(
            "port-monitor top: {} namespaces, read every {}, sorted by {}",
            node.namespaces.len(),
            humantime::format_duration(refresh),
            app.sort.label()
        ))
        .bold(),
    ];
    // The first line of `status` says the same as the one above.
    lines.extend(render::header(node).into_iter().skip(1).map(Line::from));
    lines
}

/// Names longer than this are cut: a pod UID with its prefix and runtime fits.
const NAME_WIDTH: usize = 52;

/// A right-aligned cell, as numbers are read.
fn number(text: String) -> Cell<'static> {
    Cell::from(Line::from(text).right_aligned())
}

/// A column's header, the sorted one marked; numbers' headers right-aligned above them.
fn column(name: &str, key: Option<SortKey>, sort: SortKey, numeric: bool) -> Cell<'static> {
    let text = if key == Some(sort) {
        format!("{name}▼")
    } else {
        name.to_owned()
    };
    let line = if numeric {
        Line::from(text).right_aligned()
    } else {
        Line::from(text)
    };
    let cell = Cell::from(line);
    if key == Some(sort) {
        cell.underlined()
    } else {
        cell
    }
}

fn list(frame: &mut Frame<'_>, area: Rect, app: &App) {
    let sort = app.sort;
    let header = Row::new([
        column("NETNS", None, sort, false),
        column("NAME", Some(SortKey::Name), sort, false),
        column("EPHEMERAL", None, sort, true),
        column("CAPACITY", None, sort, true),
        column("IN USE", Some(SortKey::PortsInUse), sort, true),
        column("SHARE", None, sort, true),
        column("TIME_WAIT", Some(SortKey::TimeWait), sort, true),
        column("MAX RATIO", Some(SortKey::MaxRatio), sort, true),
        column("EXHAUSTED", None, sort, true),
    ])
    .bold();
    let rows = app.rows().into_iter().map(|namespace| {
        let capacity = namespace
            .ephemeral_capacity
            .map_or_else(|| "?".to_owned(), |capacity| capacity.to_string());
        // What the daemon counted; "-" without one.
        let exhausted = namespace.daemon.as_ref().map_or_else(
            || "-".to_owned(),
            |counted| counted.exhaustion_total().to_string(),
        );
        Row::new([
            Cell::from(namespace.netns.to_string()),
            Cell::from(render::clip(&render::label(namespace), NAME_WIDTH)),
            number(render::range(namespace)),
            number(capacity),
            number(namespace.ephemeral_in_use.to_string()),
            number(render::percent(namespace.ephemeral_in_use_ratio)),
            number(namespace.time_wait.to_string()),
            number(render::ratio(namespace.utilization_max_ratio)),
            number(exhausted),
        ])
        .style(pressure(namespace.utilization_max_ratio))
    });
    let widths = [
        Constraint::Length(10),
        Constraint::Length(u16::try_from(NAME_WIDTH).unwrap_or(u16::MAX)),
        Constraint::Length(11),
        Constraint::Length(9),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(10),
        Constraint::Length(10),
        Constraint::Length(10),
    ];
    let table = Table::new(rows, widths)
        .header(header)
        .column_spacing(2)
        .flex(Flex::Start)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("> ")
        .highlight_spacing(HighlightSpacing::Always);
    let mut state = TableState::new().with_selected(app.selected_index());
    frame.render_stateful_widget(table, area, &mut state);
}

/// Red from the near-exhaustion line (0.8), yellow from half.
fn pressure(ratio: f64) -> Style {
    if ratio >= 0.8 {
        Style::new().fg(Color::Red)
    } else if ratio >= 0.5 {
        Style::new().fg(Color::Yellow)
    } else {
        Style::new()
    }
}

fn details(frame: &mut Frame<'_>, area: Rect, namespace: &NamespaceStatus) {
    let summary = summary(namespace);
    let mut below: Vec<Line<'static>> = Vec::new();
    if let Some(conntrack) = &namespace.conntrack {
        below.extend(render::nat(conntrack).into_iter().map(Line::from));
    }
    match &namespace.daemon {
        Some(counters) => below.extend(render::counted(counters).into_iter().map(Line::from)),
        None => below.push(Line::from("no counters from a daemon for this namespace")),
    }
    let height = |lines: &Vec<Line<'_>>| u16::try_from(lines.len()).unwrap_or(u16::MAX);
    let [top, table, bottom] = Layout::vertical([
        Constraint::Length(height(&summary) + 1),
        Constraint::Min(3),
        Constraint::Length(height(&below)),
    ])
    .areas(area);
    frame.render_widget(Paragraph::new(summary), top);
    let header = Row::new([
        Cell::from("DESTINATION"),
        number("PORTS IN USE".to_owned()),
        number("TIME_WAIT".to_owned()),
        number("RATIO".to_owned()),
    ])
    .bold();
    let rows = namespace.destinations.iter().map(|destination| {
        Row::new([
            Cell::from(render::destination_address(destination)),
            number(destination.ports_in_use.to_string()),
            number(destination.time_wait.to_string()),
            number(render::ratio(destination.utilization_ratio)),
        ])
        .style(pressure(destination.utilization_ratio))
    });
    let widths = [
        Constraint::Length(60),
        Constraint::Length(12),
        Constraint::Length(9),
        Constraint::Length(6),
    ];
    let empty = namespace.destinations.is_empty();
    let destinations = Table::new(rows, widths)
        .header(header)
        .column_spacing(2)
        .flex(Flex::Start);
    frame.render_widget(destinations, table);
    if empty {
        let note = Rect {
            y: table.y.saturating_add(1),
            height: table.height.saturating_sub(1),
            ..table
        };
        frame.render_widget(
            Paragraph::new("no TCP connection holds an ephemeral port"),
            note,
        );
    }
    frame.render_widget(Paragraph::new(below), bottom);
}

fn summary(namespace: &NamespaceStatus) -> Vec<Line<'static>> {
    let sockets: Vec<String> = namespace
        .sockets
        .iter()
        .map(|(state, count)| format!("{state} {count}"))
        .collect();
    vec![
        Line::from(format!("{}  {}", namespace.netns, render::label(namespace))).bold(),
        Line::from(format!(
            "ephemeral {} ({} ports): {} TCP ports in use ({}), {} UDP; TIME_WAIT {}",
            render::range(namespace),
            namespace
                .ephemeral_capacity
                .map_or_else(|| "?".to_owned(), |capacity| capacity.to_string()),
            namespace.ephemeral_in_use,
            render::percent(namespace.ephemeral_in_use_ratio),
            namespace.ephemeral_in_use_udp,
            namespace.time_wait
        )),
        Line::from(format!(
            "max ratio {} (TCP destinations {}, UDP {})",
            render::ratio(namespace.utilization_max_ratio),
            render::ratio(namespace.tcp_utilization_max_ratio),
            render::ratio(namespace.udp_utilization_ratio)
        )),
        Line::from(format!("sockets: {}", sockets.join(", "))),
    ]
}
