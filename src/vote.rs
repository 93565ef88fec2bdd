//! The vote: what a client may send, how it is validated, and the record that
//! goes to Kafka. Both ingress routes and the consumer validate through here, so
//! a rule changes in one place (DESIGN.md, "The vote").

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Longest band or album name, in characters after trimming.
pub const MAX_NAME_CHARS: usize = 100;
/// Accepted years, inclusive.
pub const YEARS: std::ops::RangeInclusive<i64> = 1900..=2100;
/// Default upper bound of `rank` (some contests rate 1..100: see [`Rules`]).
pub const DEFAULT_RANK_MAX: f64 = 10.0;
/// Longest voter id or request id, in characters after trimming.
pub const MAX_ID_CHARS: usize = 128;

/// The namespace of vote ids derived from a voter and a request id (UUIDv5):
/// a fixed, random UUID, so the same pair always gives the same id.
pub const VOTE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x6f1c_2a6e_8d1b_4c55_9b7e_52b8_3f0d_a914);

/// Contest-specific validation settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rules {
    /// Highest accepted rank, inclusive; the lowest is 0.
    pub rank_max: f64,
    /// Whether a vote must name its voter (`--require-voter`).
    pub require_voter: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            rank_max: DEFAULT_RANK_MAX,
            require_voter: false,
        }
    }
}

/// Why one field of a vote was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    Missing,
    Null,
    WrongType,
    Empty,
    TooLong,
    ForbiddenCharacter,
    NotANumber,
    NotAnInteger,
    NotFinite,
    OutOfRange,
    /// Two values for one thing (a body `request_id` and an `Idempotency-Key` that differ).
    Conflict,
}

impl Problem {
    /// A stable, low-cardinality label for metrics.
    pub fn code(self) -> &'static str {
        match self {
            Problem::Missing => "missing",
            Problem::Null => "null",
            Problem::WrongType => "wrong_type",
            Problem::Empty => "empty",
            Problem::TooLong => "too_long",
            Problem::ForbiddenCharacter => "forbidden_character",
            Problem::NotANumber => "not_a_number",
            Problem::NotAnInteger => "not_an_integer",
            Problem::NotFinite => "not_finite",
            Problem::OutOfRange => "out_of_range",
            Problem::Conflict => "conflict",
        }
    }
}

/// A field-level validation error: which field, what kind of problem, and a
/// sentence for the client.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: &'static str,
    pub problem: Problem,
    pub reason: String,
}

impl FieldError {
    pub(crate) fn new(field: &'static str, problem: Problem, reason: impl Into<String>) -> Self {
        FieldError {
            field,
            problem,
            reason: reason.into(),
        }
    }
}

/// A vote that passed validation: names trimmed, numbers in range.
#[derive(Debug, Clone, PartialEq)]
pub struct Vote {
    pub name: String,
    pub album: String,
    pub year: i32,
    pub rank: f64,
    /// Who votes (an opaque id chosen by the front-end), if said.
    pub voter: Option<String>,
    /// The client's id for this request: a retry sends the same one and gets
    /// the same vote id back, and is counted once.
    pub request_id: Option<String>,
}

impl Vote {
    /// Validates typed fields (a decoded Kafka record, the benchmark's data);
    /// the routes use [`Vote::from_json`] and [`Vote::from_fields`].
    pub fn new(name: &str, album: &str, year: i64, rank: f64, rules: &Rules) -> Result<Vote, FieldError> {
        Ok(Vote {
            name: text("name", name)?,
            album: text("album", album)?,
            year: year_in_range(year)?,
            rank: rank_in_range(rank, rules)?,
            voter: None,
            request_id: None,
        })
    }

    /// The same vote with a voter and a request id (each validated as
    /// [`ident`] does); `--require-voter` is checked by the routes' decoders.
    pub fn with_ids(self, voter: Option<&str>, request_id: Option<&str>) -> Result<Vote, FieldError> {
        Ok(Vote {
            voter: voter.map(|v| ident("voter", v)).transpose()?,
            request_id: request_id.map(|r| ident("request_id", r)).transpose()?,
            ..self
        })
    }

    /// Validates fields that may be absent, as the gRPC route receives them
    /// (proto3 `optional`): an absent field is reported missing rather than
    /// read as its zero value, which would silently make a rank of 0.
    #[allow(clippy::too_many_arguments)]
    pub fn from_fields(
        name: Option<&str>,
        album: Option<&str>,
        year: Option<i64>,
        rank: Option<f64>,
        voter: Option<&str>,
        request_id: Option<&str>,
        rules: &Rules,
    ) -> Result<Vote, FieldError> {
        fn present<T>(field: &'static str, value: Option<T>) -> Result<T, FieldError> {
            value.ok_or_else(|| FieldError::new(field, Problem::Missing, "is required"))
        }
        // Field by field, in the same order as `from_json`, so both routes name the same first error.
        Ok(Vote {
            name: text("name", present("name", name)?)?,
            album: text("album", present("album", album)?)?,
            year: year_in_range(present("year", year)?)?,
            rank: rank_in_range(present("rank", rank)?, rules)?,
            voter: voter_required(voter.map(|v| ident("voter", v)).transpose()?, rules)?,
            request_id: request_id.map(|r| ident("request_id", r)).transpose()?,
        })
    }

    /// Validates one JSON object, as the HTTP route receives it. Numbers may
    /// come as JSON numbers or as strings holding them (the seed's data files
    /// send every field as a string). Unknown fields are ignored.
    pub fn from_json(item: &Value, rules: &Rules) -> Result<Vote, FieldError> {
        let Value::Object(map) = item else {
            return Err(FieldError::new(
                "vote",
                Problem::WrongType,
                format!("expected a JSON object, got {}", kind_of(item)),
            ));
        };
        let field = |key: &'static str| match map.get(key) {
            None => Err(FieldError::new(key, Problem::Missing, "is required")),
            Some(Value::Null) => Err(FieldError::new(key, Problem::Null, "must not be null")),
            Some(v) => Ok(v),
        };
        let string = |key: &'static str| match field(key)? {
            Value::String(s) => text(key, s),
            other => Err(FieldError::new(
                key,
                Problem::WrongType,
                format!("must be a string, got {}", kind_of(other)),
            )),
        };
        let name = string("name")?;
        let album = string("album")?;
        let year = match field("year")? {
            Value::Number(n) => n.as_i64().ok_or_else(|| {
                FieldError::new(
                    "year",
                    Problem::NotAnInteger,
                    format!("must be a whole number, got {n}"),
                )
            })?,
            Value::String(s) => s.trim().parse::<i64>().map_err(|_| {
                FieldError::new(
                    "year",
                    Problem::NotAnInteger,
                    format!("must be a whole number, got {s:?}"),
                )
            })?,
            other => {
                return Err(FieldError::new(
                    "year",
                    Problem::WrongType,
                    format!("must be an integer or a string holding one, got {}", kind_of(other)),
                ));
            }
        };
        let rank = match field("rank")? {
            // serde_json never yields NaN or infinity from JSON text.
            Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
            Value::String(s) => s
                .trim()
                .parse::<f64>()
                .map_err(|_| FieldError::new("rank", Problem::NotANumber, format!("must be a number, got {s:?}")))?,
            other => {
                return Err(FieldError::new(
                    "rank",
                    Problem::WrongType,
                    format!("must be a number or a string holding one, got {}", kind_of(other)),
                ));
            }
        };
        let year = year_in_range(year)?;
        let rank = rank_in_range(rank, rules)?;
        // Optional ids: absent or null is "not given".
        let optional = |key: &'static str| match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => ident(key, s).map(Some),
            Some(other) => Err(FieldError::new(
                key,
                Problem::WrongType,
                format!("must be a string, got {}", kind_of(other)),
            )),
        };
        Ok(Vote {
            name,
            album,
            year,
            rank,
            voter: voter_required(optional("voter")?, rules)?,
            request_id: optional("request_id")?,
        })
    }

    /// Stamps an accepted vote with its id, receive time and route. With a
    /// request id the vote id is derived from it and the voter
    /// ([`vote_id_of`]), so a retried request gets the same id; otherwise it
    /// is a new UUIDv7.
    pub fn stamp(self, route: Route, received_at: DateTime<Utc>) -> VoteRecord {
        let id = match &self.request_id {
            Some(request_id) => vote_id_of(self.voter.as_deref(), request_id),
            None => Uuid::now_v7(),
        };
        VoteRecord {
            id,
            name: self.name,
            album: self.album,
            year: self.year,
            rank: self.rank,
            route,
            received_at,
            voter: self.voter,
            request_id: self.request_id,
        }
    }
}

/// The vote id of a request: UUIDv5 of `"<voter>\n<request id>"` (the voter
/// empty when anonymous) in [`VOTE_ID_NAMESPACE`]. Ids hold no newline, so
/// two different pairs never name the same text.
pub fn vote_id_of(voter: Option<&str>, request_id: &str) -> Uuid {
    let name = format!("{}\n{request_id}", voter.unwrap_or(""));
    Uuid::new_v5(&VOTE_ID_NAMESPACE, name.as_bytes())
}

/// `--require-voter`: a vote without a voter is refused.
fn voter_required(voter: Option<String>, rules: &Rules) -> Result<Option<String>, FieldError> {
    if rules.require_voter && voter.is_none() {
        return Err(FieldError::new(
            "voter",
            Problem::Missing,
            "is required: this contest counts voters (--require-voter)",
        ));
    }
    Ok(voter)
}

/// Which ingress route a vote came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Route {
    Grpc,
    Http,
}

impl Route {
    pub const ALL: [Route; 2] = [Route::Grpc, Route::Http];

    pub fn as_str(self) -> &'static str {
        match self {
            Route::Grpc => "grpc",
            Route::Http => "http",
        }
    }
}

/// The Kafka record value: key = the voter when there is one (so a voter's
/// votes keep their order in one partition), else `id`; value = this as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VoteRecord {
    pub id: Uuid,
    pub name: String,
    pub album: String,
    pub year: i32,
    pub rank: f64,
    pub route: Route,
    #[serde(with = "rfc3339_millis")]
    pub received_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub voter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl VoteRecord {
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain strings and finite numbers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes a record value and checks it against the same rules the
    /// ingress applies, so a hand-made or corrupted record cannot be counted.
    pub fn decode(bytes: &[u8], rules: &Rules) -> Result<VoteRecord, String> {
        if bytes.is_empty() {
            return Err("empty record value".into());
        }
        let record: VoteRecord = serde_json::from_slice(bytes).map_err(|e| format!("not a vote record: {e}"))?;
        let checked = Vote::new(&record.name, &record.album, record.year.into(), record.rank, rules)
            .and_then(|v| v.with_ids(record.voter.as_deref(), record.request_id.as_deref()))
            .map_err(|e| format!("invalid vote: {e}"))?;
        Ok(VoteRecord {
            name: checked.name,
            album: checked.album,
            voter: checked.voter,
            request_id: checked.request_id,
            ..record
        })
    }

    /// The Kafka record key: the voter, or the vote id for an anonymous vote.
    pub fn key(&self) -> String {
        match &self.voter {
            Some(voter) => voter.clone(),
            None => self.id.to_string(),
        }
    }

    /// `"<band> / <album>"`, the field of the per-album Redis hashes.
    pub fn album_key(&self) -> String {
        let mut key = String::new();
        self.write_album_key(&mut key);
        key
    }

    /// Appends [`Self::album_key`] to `out` (to reuse one buffer over a batch).
    pub fn write_album_key(&self, out: &mut String) {
        out.push_str(&self.name);
        out.push_str(" / ");
        out.push_str(&self.album);
    }
}

/// RFC 3339 UTC with milliseconds, e.g. `2026-11-26T18:25:39.123Z`.
pub fn format_instant(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

mod rfc3339_millis {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_instant(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&s)
            .map(|t| t.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

/// A band or album name: trimmed, not empty, at most [`MAX_NAME_CHARS`]
/// characters, no control characters.
pub(crate) fn text(field: &'static str, raw: &str) -> Result<String, FieldError> {
    bounded(field, raw, MAX_NAME_CHARS)
}

/// A voter id or request id: trimmed, 1..=[`MAX_ID_CHARS`] characters, no
/// control characters.
pub(crate) fn ident(field: &'static str, raw: &str) -> Result<String, FieldError> {
    bounded(field, raw, MAX_ID_CHARS)
}

fn bounded(field: &'static str, raw: &str, max: usize) -> Result<String, FieldError> {
    let trimmed = raw.trim();
    if trimmed.is_empty() {
        return Err(FieldError::new(field, Problem::Empty, "must not be empty"));
    }
    let chars = trimmed.chars().count();
    if chars > max {
        return Err(FieldError::new(
            field,
            Problem::TooLong,
            format!("must be at most {max} characters, got {chars}"),
        ));
    }
    // MongoDB strings cannot hold NUL, and control characters break the log page.
    if trimmed.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            Problem::ForbiddenCharacter,
            "must not contain control characters",
        ));
    }
    Ok(trimmed.to_owned())
}

fn year_in_range(year: i64) -> Result<i32, FieldError> {
    if !YEARS.contains(&year) {
        return Err(FieldError::new(
            "year",
            Problem::OutOfRange,
            format!("must be between {} and {}, got {year}", YEARS.start(), YEARS.end()),
        ));
    }
    // In range, so it fits.
    Ok(year as i32)
}

fn rank_in_range(rank: f64, rules: &Rules) -> Result<f64, FieldError> {
    if !rank.is_finite() {
        return Err(FieldError::new("rank", Problem::NotFinite, "must be a finite number"));
    }
    if !(0.0..=rules.rank_max).contains(&rank) {
        return Err(FieldError::new(
            "rank",
            Problem::OutOfRange,
            format!("must be between 0 and {}, got {rank}", rules.rank_max),
        ));
    }
    Ok(rank)
}

/// What a JSON value is, for error messages ("a number", "null", ...).
pub(crate) fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rules() -> Rules {
        Rules::default()
    }

    fn check(v: Value) -> Result<Vote, FieldError> {
        Vote::from_json(&v, &rules())
    }

    fn problem(v: Value) -> (&'static str, Problem) {
        let e = check(v).expect_err("vote should be rejected");
        (e.field, e.problem)
    }

    #[test]
    fn the_seeds_all_string_format_is_accepted() {
        let vote =
            check(json!({"name": "Bohemia Suburbana", "album": "Jamás", "year": "1997", "rank": "9.5"})).unwrap();
        assert_eq!(
            vote,
            Vote {
                name: "Bohemia Suburbana".into(),
                album: "Jamás".into(),
                year: 1997,
                rank: 9.5,
                voter: None,
                request_id: None,
            }
        );
    }

    #[test]
    fn typed_numbers_are_accepted_and_names_trimmed() {
        let vote = check(json!({"name": "  Viernes Verde ", "album": "\tAlbum\n", "year": 2005, "rank": 7})).unwrap();
        assert_eq!(vote.name, "Viernes Verde");
        assert_eq!(vote.album, "Album");
        assert_eq!(vote.year, 2005);
        assert_eq!(vote.rank, 7.0);
    }

    #[test]
    fn unknown_fields_are_ignored() {
        assert!(check(json!({"name": "a", "album": "b", "year": 2000, "rank": 1, "extra": [1, 2]})).is_ok());
    }

    #[test]
    fn a_missing_field_is_named() {
        assert_eq!(
            problem(json!({"album": "b", "year": 2000, "rank": 1})),
            ("name", Problem::Missing)
        );
        assert_eq!(
            problem(json!({"name": "a", "year": 2000, "rank": 1})),
            ("album", Problem::Missing)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "rank": 1})),
            ("year", Problem::Missing)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 2000})),
            ("rank", Problem::Missing)
        );
    }

    #[test]
    fn null_fields_are_rejected() {
        assert_eq!(
            problem(json!({"name": null, "album": "b", "year": 2000, "rank": 1})),
            ("name", Problem::Null)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 2000, "rank": null})),
            ("rank", Problem::Null)
        );
    }

    #[test]
    fn wrong_types_are_rejected() {
        assert_eq!(
            problem(json!({"name": 5, "album": "b", "year": 2000, "rank": 1})),
            ("name", Problem::WrongType)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": ["b"], "year": 2000, "rank": 1})),
            ("album", Problem::WrongType)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": true, "rank": 1})),
            ("year", Problem::WrongType)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 2000, "rank": {}})),
            ("rank", Problem::WrongType)
        );
        assert_eq!(problem(json!([1, 2])), ("vote", Problem::WrongType));
        assert_eq!(problem(json!("vote")), ("vote", Problem::WrongType));
    }

    #[test]
    fn empty_and_blank_names_are_rejected() {
        assert_eq!(
            problem(json!({"name": "", "album": "b", "year": 2000, "rank": 1})),
            ("name", Problem::Empty)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "   ", "year": 2000, "rank": 1})),
            ("album", Problem::Empty)
        );
    }

    #[test]
    fn length_is_counted_in_characters_not_bytes() {
        let hundred = "é".repeat(100); // 200 bytes, 100 characters
        assert!(check(json!({"name": hundred, "album": "b", "year": 2000, "rank": 1})).is_ok());
        let over = "é".repeat(101);
        assert_eq!(
            problem(json!({"name": "a", "album": over, "year": 2000, "rank": 1})),
            ("album", Problem::TooLong)
        );
    }

    #[test]
    fn control_characters_are_rejected() {
        assert_eq!(
            problem(json!({"name": "a\u{0}b", "album": "b", "year": 2000, "rank": 1})),
            ("name", Problem::ForbiddenCharacter)
        );
    }

    #[test]
    fn year_must_be_a_whole_number_in_range() {
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 1899, "rank": 1})),
            ("year", Problem::OutOfRange)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": "2101", "rank": 1})),
            ("year", Problem::OutOfRange)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 1997.5, "rank": 1})),
            ("year", Problem::NotAnInteger)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": "19x7", "rank": 1})),
            ("year", Problem::NotAnInteger)
        );
        assert!(check(json!({"name": "a", "album": "b", "year": 1900, "rank": 1})).is_ok());
        assert!(check(json!({"name": "a", "album": "b", "year": " 2100 ", "rank": 1})).is_ok());
    }

    #[test]
    fn rank_must_be_finite_and_within_the_configured_maximum() {
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 2000, "rank": 10.01})),
            ("rank", Problem::OutOfRange)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 2000, "rank": -0.5})),
            ("rank", Problem::OutOfRange)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 2000, "rank": "NaN"})),
            ("rank", Problem::NotFinite)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 2000, "rank": "inf"})),
            ("rank", Problem::NotFinite)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 2000, "rank": "nine"})),
            ("rank", Problem::NotANumber)
        );
        assert!(check(json!({"name": "a", "album": "b", "year": 2000, "rank": 0})).is_ok());
        assert!(check(json!({"name": "a", "album": "b", "year": 2000, "rank": "10"})).is_ok());
        let hundred = Rules {
            rank_max: 100.0,
            ..Rules::default()
        };
        assert!(Vote::from_json(&json!({"name": "a", "album": "b", "year": 2000, "rank": 87}), &hundred).is_ok());
    }

    #[test]
    fn typed_votes_follow_the_same_rules() {
        let r = rules();
        assert!(Vote::new("a", "b", 2000, 5.0, &r).is_ok());
        assert_eq!(
            Vote::new("a", "b", 2000, f64::NAN, &r).unwrap_err().problem,
            Problem::NotFinite
        );
        assert_eq!(
            Vote::new("a", "b", i64::MAX, 1.0, &r).unwrap_err().problem,
            Problem::OutOfRange
        );
        assert_eq!(Vote::new(" ", "b", 2000, 1.0, &r).unwrap_err().field, "name");
    }

    #[test]
    fn absent_typed_fields_are_missing_not_zero() {
        let r = rules();
        assert!(Vote::from_fields(Some("a"), Some("b"), Some(2000), Some(0.0), None, None, &r).is_ok());
        let missing = |e: FieldError| (e.field, e.problem);
        assert_eq!(
            missing(Vote::from_fields(Some("a"), Some("b"), Some(2000), None, None, None, &r).unwrap_err()),
            ("rank", Problem::Missing)
        );
        assert_eq!(
            missing(Vote::from_fields(None, None, None, None, None, None, &r).unwrap_err()),
            ("name", Problem::Missing)
        );
        assert_eq!(
            missing(Vote::from_fields(Some(""), None, Some(2000), Some(1.0), None, None, &r).unwrap_err()),
            ("name", Problem::Empty)
        );
    }

    #[test]
    fn a_stamped_record_round_trips_through_json_with_millisecond_time() {
        let at = DateTime::parse_from_rfc3339("2026-11-26T18:25:39.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let record = Vote::new("a", "b", 2000, 5.5, &rules()).unwrap().stamp(Route::Http, at);
        let json: Value = serde_json::from_slice(&record.to_json()).unwrap();
        assert_eq!(json["received_at"], "2026-11-26T18:25:39.123Z");
        assert_eq!(json["route"], "http");
        assert_eq!(json["id"], record.id.to_string());
        assert_eq!(record.id.get_version_num(), 7);
        let back = VoteRecord::decode(&record.to_json(), &rules()).unwrap();
        assert_eq!(back.id, record.id);
        assert_eq!(back.album_key(), "a / b");
    }

    #[test]
    fn voter_and_request_id_are_optional_trimmed_and_bounded() {
        let v =
            check(json!({"name": "a", "album": "b", "year": 2000, "rank": 1, "voter": " u1 ", "request_id": "r-9"}))
                .unwrap();
        assert_eq!((v.voter.as_deref(), v.request_id.as_deref()), (Some("u1"), Some("r-9")));
        let v = check(json!({"name": "a", "album": "b", "year": 2000, "rank": 1, "voter": null})).unwrap();
        assert_eq!((v.voter, v.request_id), (None, None));
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 2000, "rank": 1, "voter": "  "})),
            ("voter", Problem::Empty)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 2000, "rank": 1, "voter": 7})),
            ("voter", Problem::WrongType)
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 2000, "rank": 1, "request_id": "x".repeat(129)})),
            ("request_id", Problem::TooLong)
        );
        assert!(
            check(json!({"name": "a", "album": "b", "year": 2000, "rank": 1, "request_id": "é".repeat(128)})).is_ok()
        );
        assert_eq!(
            problem(json!({"name": "a", "album": "b", "year": 2000, "rank": 1, "voter": "a\nb"})),
            ("voter", Problem::ForbiddenCharacter)
        );
        let r = rules();
        let typed = Vote::from_fields(Some("a"), Some("b"), Some(2000), Some(1.0), Some(""), None, &r);
        assert_eq!(typed.unwrap_err().field, "voter");
    }

    #[test]
    fn require_voter_refuses_anonymous_votes_on_both_decoders() {
        let strict = Rules {
            require_voter: true,
            ..Rules::default()
        };
        let e = Vote::from_json(&json!({"name": "a", "album": "b", "year": 2000, "rank": 1}), &strict).unwrap_err();
        assert_eq!((e.field, e.problem), ("voter", Problem::Missing));
        let e = Vote::from_fields(Some("a"), Some("b"), Some(2000), Some(1.0), None, None, &strict).unwrap_err();
        assert_eq!((e.field, e.problem), ("voter", Problem::Missing));
        assert!(Vote::from_fields(Some("a"), Some("b"), Some(2000), Some(1.0), Some("u"), None, &strict).is_ok());
    }

    #[test]
    fn a_request_id_gives_the_same_vote_id_every_time_and_the_voter_keys_the_record() {
        let at = Utc::now();
        let vote = |voter: Option<&str>, request: Option<&str>| {
            Vote::new("a", "b", 2000, 5.0, &rules())
                .unwrap()
                .with_ids(voter, request)
                .unwrap()
                .stamp(Route::Http, at)
        };
        let first = vote(Some("u1"), Some("r1"));
        assert_eq!(first.id, vote(Some("u1"), Some("r1")).id, "a retry gets the same id");
        assert_eq!(first.id.get_version_num(), 5);
        assert_ne!(first.id, vote(Some("u2"), Some("r1")).id, "another voter's request");
        assert_ne!(first.id, vote(None, Some("r1")).id);
        assert_eq!(vote(None, Some("r1")).id, vote(None, Some("r1")).id);
        assert_ne!(
            vote(None, None).id,
            vote(None, None).id,
            "without a request id every vote is new"
        );
        assert_eq!(first.key(), "u1");
        let anonymous = vote(None, Some("r1"));
        assert_eq!(anonymous.key(), anonymous.id.to_string());
        let json: Value = serde_json::from_slice(&first.to_json()).unwrap();
        assert_eq!(
            (json["voter"].as_str(), json["request_id"].as_str()),
            (Some("u1"), Some("r1"))
        );
        let plain: Value = serde_json::from_slice(&vote(None, None).to_json()).unwrap();
        assert!(plain.get("voter").is_none() && plain.get("request_id").is_none());
        let back = VoteRecord::decode(&first.to_json(), &rules()).unwrap();
        assert_eq!(
            (back.id, back.voter, back.request_id),
            (first.id, first.voter, first.request_id)
        );
    }

    #[test]
    fn decoding_rejects_poison_records() {
        let r = rules();
        assert!(VoteRecord::decode(b"", &r).is_err());
        assert!(VoteRecord::decode(b"not json", &r).is_err());
        let bad_rank = br#"{"id":"0190a5a0-0000-7000-8000-000000000000","name":"a","album":"b","year":2000,"rank":99,"route":"http","received_at":"2026-11-26T18:25:39.123Z"}"#;
        assert!(VoteRecord::decode(bad_rank, &r).unwrap_err().contains("rank"));
        let bad_type = br#"{"id":"0190a5a0-0000-7000-8000-000000000000","name":"a","album":"b","year":"2000","rank":1,"route":"http","received_at":"2026-11-26T18:25:39.123Z"}"#;
        assert!(VoteRecord::decode(bad_type, &r).is_err());
        let bad_voter = br#"{"id":"0190a5a0-0000-7000-8000-000000000000","name":"a","album":"b","year":2000,"rank":1,"route":"http","received_at":"2026-11-26T18:25:39.123Z","voter":""}"#;
        assert!(VoteRecord::decode(bad_voter, &r).unwrap_err().contains("voter"));
    }
}
