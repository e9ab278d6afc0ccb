//! `type.action.key` filters (`docs/protocol.md` §3.2) and the compiled per-core filter index.
//!
//! A [`Filter`] is parsed once from a client's `register` argument. A [`FilterIndex`], owned by one
//! core, maps each event to the connection slots whose filters may match it with at most eight
//! lookups, however many filters are registered: every level (type, action, key) holds a map of
//! exact values plus a dedicated slot for the wildcard, as in the nats-server sublist.

// aHash: several times faster than SipHash on short keys, and still keyed per process, so
// client-chosen filter keys cannot be crafted to collide.
use ahash::AHashMap as HashMap;

/// The most index entries one filter may expand to; a 4 KiB command of short list elements
/// could otherwise expand to millions of entries and stall its core.
pub const MAX_FILTER_ENTRIES: usize = 4096;

/// A leaf with more ids than this gets a position map so removal stays O(1); below it a linear
/// scan is as fast and saves a map per leaf (most leaves hold one connection). Tests use a tiny
/// threshold so the model test crosses it both ways.
const INDEXED_LEAF_LEN: usize = if cfg!(test) { 4 } else { 32 };

/// Why a filter was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// The text has fewer than the three dot-separated fields `type.action.key`.
    #[error("filter \"{text}\" has {fields} field{}; a filter is type.action.key", plural_s(.fields))]
    TooFewFields {
        /// The filter as given.
        text: String,
        /// How many fields it has.
        fields: usize,
    },
    /// The comma lists multiply out to more index entries than one filter may use.
    #[error(
        "filter \"{text}\" expands to {entries} combinations of type, action and key; \
         at most {MAX_FILTER_ENTRIES} are allowed, so split it into several filters or use *"
    )]
    TooManyEntries {
        /// The filter as given.
        text: String,
        /// The product of its list lengths (saturated).
        entries: usize,
    },
}

fn plural_s(count: &usize) -> &'static str {
    if *count == 1 { "" } else { "s" }
}

/// One field of a filter: the wildcard or a list of exact values.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// `*`: any value.
    Any,
    /// Exact, case-sensitive values, unescaped, sorted and without duplicates.
    List(Vec<Box<str>>),
}

impl Field {
    /// Parses one field: `*` (after trimming) or a comma list with `\1` `\2` `\3` escapes.
    fn parse(text: &str) -> Field {
        if text.trim() == "*" {
            return Field::Any;
        }
        let mut values: Vec<Box<str>> = text
            .split(',')
            .map(|element| unescape(element.trim()))
            .collect();
        // Duplicates would only add index entries that match the same events; sorting makes
        // removing them O(n log n) for a list of thousands of elements.
        values.sort_unstable();
        values.dedup();
        Field::List(values)
    }

    /// Whether `value` is accepted by this field.
    pub fn matches(&self, value: &str) -> bool {
        match self {
            Field::Any => true,
            Field::List(values) => values.iter().any(|v| **v == *value),
        }
    }

    /// How many index slots this field occupies at its level.
    fn slot_count(&self) -> usize {
        match self {
            Field::Any => 1,
            Field::List(values) => values.len(),
        }
    }

    /// The index slots this field occupies at its level.
    fn slots(&self) -> impl Iterator<Item = Slot<'_>> {
        let (any, values): (Option<Slot<'_>>, &[Box<str>]) = match self {
            Field::Any => (Some(Slot::Any), &[]),
            Field::List(values) => (None, values),
        };
        any.into_iter()
            .chain(values.iter().map(|value| Slot::Exact(value)))
    }
}

/// Replaces `\1`, `\2` and `\3` with `.`, `,` and `*`; any other backslash stays as it is.
fn unescape(element: &str) -> Box<str> {
    if !element.contains('\\') {
        return Box::from(element);
    }
    let mut out = String::with_capacity(element.len());
    let mut chars = element.chars().peekable();
    while let Some(c) = chars.next() {
        let replacement = match (c, chars.peek()) {
            ('\\', Some('1')) => Some('.'),
            ('\\', Some('2')) => Some(','),
            ('\\', Some('3')) => Some('*'),
            _ => None,
        };
        match replacement {
            Some(r) => {
                out.push(r);
                chars.next();
            }
            None => out.push(c),
        }
    }
    out.into_boxed_str()
}

/// A parsed `type.action.key` filter.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Filter {
    text: Box<str>,
    ty: Field,
    action: Field,
    key: Field,
}

impl Filter {
    /// Parses a filter: split at the first two dots, so the key may itself contain dots.
    pub fn parse(text: &str) -> Result<Filter, FilterError> {
        let mut fields = text.splitn(3, '.');
        let (Some(ty), Some(action), Some(key)) = (fields.next(), fields.next(), fields.next())
        else {
            return Err(FilterError::TooFewFields {
                text: text.to_owned(),
                fields: text.split('.').count(),
            });
        };
        let filter = Filter {
            text: Box::from(text),
            ty: Field::parse(ty),
            action: Field::parse(action),
            key: Field::parse(key),
        };
        let entries = filter.entry_count();
        if entries > MAX_FILTER_ENTRIES {
            return Err(FilterError::TooManyEntries {
                text: text.to_owned(),
                entries,
            });
        }
        Ok(filter)
    }

    /// The text given to [`Filter::parse`], exactly.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The type field.
    pub fn ty(&self) -> &Field {
        &self.ty
    }

    /// The action field.
    pub fn action(&self) -> &Field {
        &self.action
    }

    /// The key field.
    pub fn key(&self) -> &Field {
        &self.key
    }

    /// Whether an event with this type, action and key passes the filter (the naive matcher).
    pub fn matches(&self, ty: &str, action: &str, key: &str) -> bool {
        self.ty.matches(ty) && self.action.matches(action) && self.key.matches(key)
    }

    /// How many index entries this filter expands to (saturating; bounded after parsing).
    pub fn entry_count(&self) -> usize {
        self.ty
            .slot_count()
            .saturating_mul(self.action.slot_count())
            .saturating_mul(self.key.slot_count())
    }
}

/// Where a filter value sits within one index level.
#[derive(Debug, Clone, Copy)]
enum Slot<'a> {
    /// The map of exact values, under this value.
    Exact(&'a str),
    /// The dedicated wildcard slot.
    Any,
}

/// A node of the index that can tell when it holds nothing, so empty nodes can be dropped.
trait Node: Default {
    fn is_empty(&self) -> bool;
}

/// One level of the index: exact values and the wildcard slot, each leading to the next level.
#[derive(Debug)]
struct Level<T> {
    exact: HashMap<Box<str>, T>,
    any: Option<T>,
}

impl<T> Default for Level<T> {
    fn default() -> Self {
        Level {
            exact: HashMap::default(),
            any: None,
        }
    }
}

impl<T: Node> Node for Level<T> {
    fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.any.is_none()
    }
}

impl<T: Node> Level<T> {
    /// The two children an event value reaches: its exact slot and the wildcard slot.
    fn lookup(&self, value: &str) -> [Option<&T>; 2] {
        [self.exact.get(value), self.any.as_ref()]
    }

    fn get_or_insert(&mut self, slot: Slot<'_>) -> &mut T {
        match slot {
            // Allocating the key on every insert is fine: inserts happen per `register`, not per event.
            Slot::Exact(value) => self.exact.entry(Box::from(value)).or_default(),
            Slot::Any => self.any.get_or_insert_with(T::default),
        }
    }

    fn get_mut(&mut self, slot: Slot<'_>) -> Option<&mut T> {
        match slot {
            Slot::Exact(value) => self.exact.get_mut(value),
            Slot::Any => self.any.as_mut(),
        }
    }

    /// Drops the child at `slot` if it has become empty.
    fn prune(&mut self, slot: Slot<'_>) {
        match slot {
            Slot::Exact(value) => {
                if self.exact.get(value).is_some_and(Node::is_empty) {
                    self.exact.remove(value);
                }
            }
            Slot::Any => {
                if self.any.as_ref().is_some_and(Node::is_empty) {
                    self.any = None;
                }
            }
        }
    }
}

/// The connection slots registered on one (type, action, key) entry.
#[derive(Debug, Default)]
struct Leaf {
    /// Each id once, in no particular order, so matching hands out this slice directly.
    ids: Vec<u32>,
    /// How many registered filters of `ids[i]` expand to this entry.
    counts: Vec<u32>,
    /// Position of each id in `ids`, kept only for leaves longer than [`INDEXED_LEAF_LEN`].
    positions: Option<HashMap<u32, usize>>,
}

impl Node for Leaf {
    fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl Leaf {
    fn position(&self, id: u32) -> Option<usize> {
        match &self.positions {
            Some(positions) => positions.get(&id).copied(),
            None => self.ids.iter().position(|&held| held == id),
        }
    }

    fn add(&mut self, id: u32) {
        if let Some(at) = self.position(id) {
            if let Some(count) = self.counts.get_mut(at) {
                *count = count.saturating_add(1);
            }
            return;
        }
        self.ids.push(id);
        self.counts.push(1);
        match &mut self.positions {
            Some(positions) => {
                positions.insert(id, self.ids.len() - 1);
            }
            None if self.ids.len() > INDEXED_LEAF_LEN => {
                let positions = self.ids.iter().enumerate().map(|(at, &id)| (id, at));
                self.positions = Some(positions.collect());
            }
            None => {}
        }
    }

    /// Drops one registration of `id`; returns whether `id` held one.
    fn remove(&mut self, id: u32) -> bool {
        let Some(at) = self.position(id) else {
            return false;
        };
        let Some(count) = self.counts.get_mut(at) else {
            return false;
        };
        *count -= 1;
        if *count > 0 {
            return true;
        }
        self.ids.swap_remove(at);
        self.counts.swap_remove(at);
        if let Some(positions) = &mut self.positions {
            positions.remove(&id);
            if let Some(&moved) = self.ids.get(at) {
                positions.insert(moved, at);
            }
            // Hysteresis: drop the map well below the threshold so a leaf hovering around it
            // does not rebuild the map on every add.
            if self.ids.len() < INDEXED_LEAF_LEN / 2 {
                self.positions = None;
            }
        }
        if self.ids.capacity() > 4 * self.ids.len().max(4) {
            self.ids.shrink_to(2 * self.ids.len());
            self.counts.shrink_to(2 * self.counts.len());
        }
        true
    }
}

type KeyLevel = Level<Leaf>;
type ActionLevel = Level<KeyLevel>;
type TypeLevel = Level<ActionLevel>;

/// The compiled filters of one core's connections; ids are connection slot numbers.
#[derive(Debug, Default)]
pub struct FilterIndex {
    types: TypeLevel,
    entries: usize,
}

impl FilterIndex {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `filter` for connection `id`: one entry per combination of its field values.
    pub fn insert(&mut self, id: u32, filter: &Filter) {
        for ty in filter.ty.slots() {
            let actions = self.types.get_or_insert(ty);
            for action in filter.action.slots() {
                let keys = actions.get_or_insert(action);
                for key in filter.key.slots() {
                    keys.get_or_insert(key).add(id);
                    self.entries += 1;
                }
            }
        }
    }

    /// Undoes one [`FilterIndex::insert`] of an equal filter for `id`, dropping emptied nodes.
    pub fn remove(&mut self, id: u32, filter: &Filter) {
        for ty in filter.ty.slots() {
            let Some(actions) = self.types.get_mut(ty) else {
                continue;
            };
            for action in filter.action.slots() {
                let Some(keys) = actions.get_mut(action) else {
                    continue;
                };
                for key in filter.key.slots() {
                    if let Some(leaf) = keys.get_mut(key)
                        && leaf.remove(id)
                    {
                        self.entries -= 1;
                    }
                    keys.prune(key);
                }
                actions.prune(action);
            }
            self.types.prune(ty);
        }
    }

    /// Calls `f` with each slice of candidate ids for this event (at most 2x2x2 probes:
    /// exact/wildcard per level). An id may appear in several slices; the caller deduplicates
    /// with a per-event stamp.
    pub fn for_each_candidate(&self, ty: &str, action: &str, key: &str, mut f: impl FnMut(&[u32])) {
        for actions in self.types.lookup(ty).into_iter().flatten() {
            for keys in actions.lookup(action).into_iter().flatten() {
                for leaf in keys.lookup(key).into_iter().flatten() {
                    if !leaf.ids.is_empty() {
                        f(&leaf.ids);
                    }
                }
            }
        }
    }

    /// Total entries held: the sum of [`Filter::entry_count`] over the registered filters.
    pub fn entries(&self) -> usize {
        self.entries
    }

    /// Whether the index holds no entries and no nodes at all.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn list(values: &[&str]) -> Field {
        Field::List(values.iter().map(|v| Box::from(*v)).collect())
    }

    fn fields(text: &str) -> (Field, Field, Field) {
        match Filter::parse(text) {
            Ok(filter) => (filter.ty, filter.action, filter.key),
            Err(err) => panic!("{text:?} should parse: {err}"),
        }
    }

    #[test]
    fn accepted_filters_parse_into_their_fields() {
        let table: &[(&str, Field, Field, Field)] = &[
            ("*.*.*", Field::Any, Field::Any, Field::Any),
            (" * . *\t. * ", Field::Any, Field::Any, Field::Any),
            (
                "profiles.save,update.*",
                list(&["profiles"]),
                list(&["save", "update"]),
                Field::Any,
            ),
            (
                "bootenvs.update.centos-7.6-install",
                list(&["bootenvs"]),
                list(&["update"]),
                list(&["centos-7.6-install"]),
            ),
            (
                "connections.create.user:a.b@example.com",
                list(&["connections"]),
                list(&["create"]),
                list(&["user:a.b@example.com"]),
            ),
            (
                "a , b.c.d,e",
                list(&["a", "b"]),
                list(&["c"]),
                list(&["d", "e"]),
            ),
            (
                r"x\1y.a\2b.c\3",
                list(&["x.y"]),
                list(&["a,b"]),
                list(&["c*"]),
            ),
            (r"a\4.b\.c", list(&[r"a\4"]), list(&[r"b\"]), list(&["c"])),
            ("a,*.b.c", list(&["*", "a"]), list(&["b"]), list(&["c"])),
            ("mach*.b.*x", list(&["mach*"]), list(&["b"]), list(&["*x"])),
            ("..", list(&[""]), list(&[""]), list(&[""])),
            ("a,,a.b.c", list(&["", "a"]), list(&["b"]), list(&["c"])),
            ("a.b.*.*", list(&["a"]), list(&["b"]), list(&["*.*"])),
        ];
        for (text, ty, action, key) in table {
            assert_eq!(
                fields(text),
                (ty.clone(), action.clone(), key.clone()),
                "{text:?}"
            );
        }
    }

    #[test]
    fn filters_with_fewer_than_three_fields_are_rejected_with_their_field_count() {
        let table: &[(&str, usize)] = &[("", 1), ("profiles", 1), ("a.b", 2), ("*.*", 2)];
        for &(text, count) in table {
            let err = Filter::parse(text).err();
            assert_eq!(
                err,
                Some(FilterError::TooFewFields {
                    text: text.to_owned(),
                    fields: count
                }),
                "{text:?}"
            );
        }
        let message = Filter::parse("a.b").err().map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some("filter \"a.b\" has 2 fields; a filter is type.action.key")
        );
        let message = Filter::parse("a").err().map(|e| e.to_string());
        assert_eq!(
            message.as_deref(),
            Some("filter \"a\" has 1 field; a filter is type.action.key")
        );
    }

    #[test]
    fn filters_expanding_past_the_entry_limit_are_rejected() {
        let sixteen: Vec<String> = (0..16).map(|i| format!("v{i}")).collect();
        let sixteen = sixteen.join(",");
        let at_limit = format!("{sixteen}.{sixteen}.{sixteen}");
        assert_eq!(Filter::parse(&at_limit).map(|f| f.entry_count()), Ok(4096));

        let over = format!("{sixteen},extra.{sixteen}.{sixteen}");
        assert!(matches!(
            Filter::parse(&over),
            Err(FilterError::TooManyEntries { entries: 4352, .. })
        ));

        // A 4 KiB command of short elements must be refused, not expanded.
        let huge: Vec<String> = (0..400).map(|i| i.to_string()).collect();
        let huge = huge.join(",");
        let huge = format!("{huge}.{huge}.{huge}");
        assert!(matches!(
            Filter::parse(&huge),
            Err(FilterError::TooManyEntries { .. })
        ));
    }

    #[test]
    fn text_is_kept_exactly_as_given() {
        let text = r" a ,b\1.c . d.e ";
        assert_eq!(
            Filter::parse(text).map(|f| f.text().to_owned()),
            Ok(text.to_owned())
        );
    }

    #[test]
    fn matching_is_exact_and_case_sensitive_without_globbing() {
        let Ok(filter) = Filter::parse("machines,profiles.*.mach*") else {
            panic!("filter should parse");
        };
        assert!(filter.matches("machines", "update", "mach*"));
        assert!(filter.matches("profiles", "anything", "mach*"));
        assert!(!filter.matches("machines", "update", "machine1"));
        assert!(!filter.matches("Machines", "update", "mach*"));
        let Ok(dotted) = Filter::parse("bootenvs.update.centos-7.6-install") else {
            panic!("filter should parse");
        };
        assert!(dotted.matches("bootenvs", "update", "centos-7.6-install"));
        assert!(!dotted.matches("bootenvs", "update", "centos-7"));
    }

    #[test]
    fn entry_count_is_the_product_of_list_lengths() {
        let counts = ["*.*.*", "a,b.c,d.e", "a,b,c.*.x,y", "a,a,a.b.c"]
            .map(|text| Filter::parse(text).map(|f| f.entry_count()));
        assert_eq!(counts, [Ok(1), Ok(4), Ok(6), Ok(1)]);
    }

    fn candidates(index: &FilterIndex, ty: &str, action: &str, key: &str) -> BTreeSet<u32> {
        let mut ids = BTreeSet::new();
        index.for_each_candidate(ty, action, key, |slice| ids.extend(slice));
        ids
    }

    fn parsed(text: &str) -> Filter {
        match Filter::parse(text) {
            Ok(filter) => filter,
            Err(err) => panic!("{text:?} should parse: {err}"),
        }
    }

    #[test]
    fn one_connection_holding_two_filters_on_the_same_entry_keeps_it_until_both_go() {
        let mut index = FilterIndex::new();
        let wide = parsed("a.b,c.d");
        let narrow = parsed("a.b.d");
        index.insert(7, &wide);
        index.insert(7, &narrow);
        assert_eq!(index.entries(), 3);
        index.remove(7, &wide);
        assert_eq!(candidates(&index, "a", "b", "d"), BTreeSet::from([7]));
        assert!(candidates(&index, "a", "c", "d").is_empty());
        index.remove(7, &narrow);
        assert!(index.is_empty());
        assert_eq!(index.entries(), 0);
    }

    #[test]
    fn thousands_of_connections_on_one_entry_leave_one_by_one_and_leave_nothing_behind() {
        let mut index = FilterIndex::new();
        let all = parsed("*.*.*");
        for id in 0..5000 {
            index.insert(id, &all);
        }
        assert_eq!(candidates(&index, "x", "y", "z").len(), 5000);
        for id in (0..5000).rev().step_by(2).chain((0..5000).step_by(2)) {
            index.remove(id, &all);
            assert!(!candidates(&index, "x", "y", "z").contains(&id));
        }
        assert!(index.is_empty());
    }

    #[test]
    fn an_event_probes_at_most_eight_leaves() {
        let mut index = FilterIndex::new();
        for (id, text) in [
            "*.*.*", "a.*.*", "*.b.*", "*.*.c", "a.b.*", "a.*.c", "*.b.c", "a.b.c",
        ]
        .iter()
        .enumerate()
        {
            index.insert(id as u32, &parsed(text));
        }
        let mut probes = 0;
        index.for_each_candidate("a", "b", "c", |_| probes += 1);
        assert_eq!(probes, 8);
        assert_eq!(candidates(&index, "a", "b", "c").len(), 8);
    }

    /// Small alphabets so that random filters and events often meet.
    fn field_text() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["*", "a", "b", "a,b", "b, a", "a,*", r"\3", "", " * "])
            .prop_map(str::to_owned)
    }

    fn key_text() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["*", "a", "x.y", "a,x.y", r"x\1y", "*.y", "a,a"])
            .prop_map(str::to_owned)
    }

    fn filter_text() -> impl Strategy<Value = String> {
        (field_text(), field_text(), key_text()).prop_map(|(t, a, k)| format!("{t}.{a}.{k}"))
    }

    fn event_value() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec!["a", "b", "*", "x.y", "c", ""])
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u32, String),
        /// Removes the n-th registration currently held (modulo their count), if any.
        Remove(usize),
    }

    /// Mostly a few ids so filters overlap, sometimes more so leaves pass INDEXED_LEAF_LEN.
    fn connection_id() -> impl Strategy<Value = u32> {
        prop_oneof![0u32..4, 0u32..16]
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (connection_id(), filter_text()).prop_map(|(id, text)| Op::Insert(id, text)),
            2 => any::<usize>().prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn the_index_finds_exactly_the_ids_the_naive_matcher_finds(
            ops in prop::collection::vec(op(), 0..200),
            events in prop::collection::vec((event_value(), event_value(), event_value()), 1..20),
        ) {
            let mut index = FilterIndex::new();
            let mut registered: Vec<(u32, Filter)> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(id, text) => {
                        let filter = parsed(&text);
                        index.insert(id, &filter);
                        registered.push((id, filter));
                    }
                    Op::Remove(n) => {
                        if !registered.is_empty() {
                            let (id, filter) = registered.swap_remove(n % registered.len());
                            index.remove(id, &filter);
                        }
                    }
                }
            }
            let expected_entries: usize = registered.iter().map(|(_, f)| f.entry_count()).sum();
            prop_assert_eq!(index.entries(), expected_entries);
            for (ty, action, key) in events {
                let naive: BTreeSet<u32> = registered
                    .iter()
                    .filter(|(_, filter)| filter.matches(ty, action, key))
                    .map(|(id, _)| *id)
                    .collect();
                prop_assert_eq!(candidates(&index, ty, action, key), naive, "{}.{}.{}", ty, action, key);
            }
            for (id, filter) in registered.drain(..) {
                index.remove(id, &filter);
            }
            prop_assert!(index.is_empty());
            prop_assert_eq!(index.entries(), 0);
        }
    }
}
