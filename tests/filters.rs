//! `docs/protocol.md` §3.2: filter syntax and matching, observed through delivered events.

mod common;

use common::{Server, event, unique};

/// Registers `filters` on a fresh connection, publishes `events` (type, action, key), and
/// returns the indices of the events that were delivered, in arrival order.
/// `{T}` in a filter or an event type stands for a type unique to this call.
fn delivered(filters: &[&str], events: &[(&str, &str, &str)]) -> Vec<usize> {
    let server = Server::shared();
    let kind = unique("ftype");
    let done = unique("fdone");
    let mut client = server.ws(&server.admin());
    for filter in filters {
        client.register(&filter.replace("{T}", &kind));
    }
    client.register(&format!("{done}.done.done"));
    let seqs: Vec<u64> = events
        .iter()
        .map(|(t, a, k)| server.publish(event(&t.replace("{T}", &kind), a, k)))
        .collect();
    let sentinel = server.publish(event(&done, "done", "done"));
    let received = client.events_through(sentinel);
    received
        .iter()
        .filter_map(|e| e["Seq"].as_u64())
        .filter(|seq| *seq != sentinel)
        .map(|seq| {
            seqs.iter()
                .position(|s| *s == seq)
                .unwrap_or_else(|| panic!("an event this test did not publish: {received:?}"))
        })
        .collect()
}

#[test]
fn key_is_the_remainder_after_the_first_two_dots() {
    let got = delivered(
        &["{T}.update.centos-7.6-install"],
        &[
            ("{T}", "update", "centos-7.6-install"),
            ("{T}", "update", "centos-7"),
            ("{T}", "update", "centos-7.6-install.x"),
        ],
    );
    assert_eq!(got, [0]);
}

#[test]
fn key_may_contain_dots_colons_and_at_signs() {
    let key = unique("user:a.b@example.com");
    let filter = format!("{{T}}.create.{key}");
    let got = delivered(
        &[&filter],
        &[("{T}", "create", &key), ("{T}", "create", "user:a")],
    );
    assert_eq!(got, [0]);
}

#[test]
fn star_matches_any_value_in_each_field() {
    let key = unique("anykey");
    let filter = format!("*.*.{key}");
    let got = delivered(
        &[&filter, "{T}.*.fixed"],
        &[
            ("{T}", "save", &key),
            ("{T}", "delete", &key),
            ("{T}", "anything", "fixed"),
            ("{T}", "save", "other"),
        ],
    );
    assert_eq!(got, [0, 1, 2]);
}

#[test]
fn comma_lists_match_any_listed_value_in_each_field() {
    let got = delivered(
        &["{T}.create,delete.a,b"],
        &[
            ("{T}", "create", "a"),
            ("{T}", "delete", "b"),
            ("{T}", "update", "a"),
            ("{T}", "create", "c"),
            ("{T}", "create", "a,b"),
        ],
    );
    assert_eq!(got, [0, 1]);
}

#[test]
fn type_field_takes_a_list_too() {
    let other = unique("ftypeother");
    let filter = format!("{{T}},{other}.save.k");
    let got = delivered(
        &[&filter],
        &[
            ("{T}", "save", "k"),
            (&other, "save", "k"),
            ("{T}", "save", "j"),
        ],
    );
    assert_eq!(got, [0, 1]);
}

#[test]
fn list_elements_are_trimmed() {
    let got = delivered(
        &["{T}.save. a , b"],
        &[
            ("{T}", "save", "a"),
            ("{T}", "save", "b"),
            ("{T}", "save", " a "),
        ],
    );
    assert_eq!(got, [0, 1]);
}

#[test]
fn escapes_stand_for_dot_comma_and_star() {
    let got = delivered(
        &["{T}.save.a\\1b,x\\2y,s\\3"],
        &[
            ("{T}", "save", "a.b"),
            ("{T}", "save", "x,y"),
            ("{T}", "save", "s*"),
            ("{T}", "save", "a\\1b"),
            ("{T}", "save", "x"),
            ("{T}", "save", "s"),
        ],
    );
    assert_eq!(got, [0, 1, 2]);
}

#[test]
fn star_inside_a_list_is_a_literal_star() {
    let got = delivered(
        &["{T}.save.*,z"],
        &[
            ("{T}", "save", "*"),
            ("{T}", "save", "z"),
            ("{T}", "save", "q"),
        ],
    );
    assert_eq!(got, [0, 1]);
}

#[test]
fn there_is_no_globbing() {
    let got = delivered(
        &["{T}.save.mach*"],
        &[
            ("{T}", "save", "machine"),
            ("{T}", "save", "mach*"),
            ("{T}", "save", "mach"),
        ],
    );
    assert_eq!(got, [1]);
}

#[test]
fn values_are_case_sensitive() {
    let got = delivered(
        &["{T}.save.Global"],
        &[
            ("{T}", "save", "global"),
            ("{T}", "Save", "Global"),
            ("{T}", "save", "Global"),
        ],
    );
    assert_eq!(got, [2]);
}

#[test]
fn an_event_matching_several_filters_arrives_once() {
    let key = unique("multi");
    let by_key = format!("*.save.{key}");
    let got = delivered(
        &["{T}.*.*", "{T}.save.*", &by_key, "{T}.save,update.*"],
        &[("{T}", "save", &key), ("{T}", "update", &key)],
    );
    assert_eq!(got, [0, 1]);
}
