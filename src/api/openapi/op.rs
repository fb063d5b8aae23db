//! The pieces every path of the document is built from: [`Op`] (one operation, its
//! responses derived from the API codes it may answer) and the parameters and schemas
//! several paths share.

use serde_json::{json, Map, Value};

/// Paths and their operations, as each area of the API lists them.
pub(super) type Paths = Vec<(&'static str, Vec<(&'static str, Op)>)>;

pub(super) fn envelope(data: Value) -> Value {
    json!({
        "type": "object",
        "required": ["code", "message", "data"],
        "properties": {
            "code": {"type": "integer", "enum": [0]},
            "message": {"type": "string"},
            "data": data,
        }
    })
}

pub(super) fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

pub(super) fn path_param(name: &str, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"},
           "description": description})
}

pub(super) fn query_param(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": false, "schema": schema,
           "description": description})
}

/// One operation. `errors` are the API codes it may answer (statuses are derived).
pub(super) struct Op {
    summary: &'static str,
    auth: bool,
    params: Vec<Value>,
    body: Option<Value>,
    ok: Value,
    errors: &'static [u32],
}

impl Op {
    pub(super) fn new(summary: &'static str) -> Self {
        Op {
            summary,
            auth: false,
            params: Vec::new(),
            body: None,
            ok: envelope(json!({"type": "object"})),
            errors: &[],
        }
    }

    pub(super) fn auth(mut self) -> Self {
        self.auth = true;
        self
    }

    pub(super) fn params(mut self, p: Vec<Value>) -> Self {
        self.params = p;
        self
    }

    pub(super) fn body(mut self, schema: Value) -> Self {
        self.body = Some(json!({
            "required": true,
            "content": {"application/json": {"schema": schema}}
        }));
        self
    }

    pub(super) fn raw_body(mut self, body: Value) -> Self {
        self.body = Some(body);
        self
    }

    pub(super) fn ok(mut self, data: Value) -> Self {
        self.ok = envelope(data);
        self
    }

    pub(super) fn ok_raw(mut self, response: Value) -> Self {
        self.ok = response;
        self
    }

    pub(super) fn errors(mut self, codes: &'static [u32]) -> Self {
        self.errors = codes;
        self
    }

    pub(super) fn build(self) -> Value {
        let mut responses = Map::new();
        if self.ok.get("content").is_some() {
            responses.insert("200".into(), self.ok);
        } else {
            responses.insert(
                "200".into(),
                json!({"description": "ok",
                       "content": {"application/json": {"schema": self.ok}}}),
            );
        }
        let mut codes: Vec<u32> = self.errors.to_vec();
        if self.auth {
            codes.extend([40101, 40102, 40103, 40105]);
        }
        // A route that can find storage busy can find it unreachable (the Redis backend).
        if codes.contains(&crate::codes::STORE_BUSY) {
            codes.push(crate::codes::STORE_UNAVAILABLE);
        }
        let mut by_status: std::collections::BTreeMap<u16, Vec<u32>> = Default::default();
        for c in codes {
            // API codes are 5 digits (status × 100 + n); the danmaku protocol's, which
            // `POST /rooms/{id}/danmaku` answers with, are 4 (status × 10 + n).
            let status = if c >= 10_000 { c / 100 } else { c / 10 };
            by_status.entry(status as u16).or_default().push(c);
        }
        for (status, codes) in by_status {
            let list: Vec<String> = codes.iter().map(u32::to_string).collect();
            responses.insert(
                status.to_string(),
                json!({"description": format!("error codes {}", list.join(", ")),
                       "content": {"application/json": {"schema": schema_ref("Error")}}}),
            );
        }
        let mut op = json!({"summary": self.summary, "responses": responses});
        if !self.params.is_empty() {
            op["parameters"] = Value::Array(self.params);
        }
        if let Some(b) = self.body {
            op["requestBody"] = b;
        }
        if self.auth {
            op["security"] = json!([{"bearer": []}]);
        }
        op
    }
}

pub(super) fn room_id() -> Value {
    path_param("id", "room id (also the stream name and the danmaku room)")
}

pub(super) fn uid() -> Value {
    path_param("uid", "the user acted on")
}

pub(super) fn seconds_body(description: &str, max: u64) -> Value {
    json!({"type": "object", "required": ["seconds"], "properties": {
        "seconds": {"type": "integer", "minimum": 0, "maximum": max, "description": description}
    }})
}

pub(super) fn moderation_ok() -> Value {
    json!({"type": "object", "properties": {
        "room": {"type": "string"}, "uid": {"type": "string"},
        "action": {"type": "string"}, "seconds": {"type": "integer"}
    }})
}

pub(super) const MOD_ERRORS: &[u32] = &[40001, 40302, 40401, 40901, 42201, 50301, 50304];
pub(super) const OWNER_ERRORS: &[u32] = &[40001, 40301, 40401, 40901, 42201, 50301, 50304];
