//! A real answer against its schema in the simulator's OpenAPI document: the subset of
//! JSON Schema the document uses ($ref, type, enum, properties, required, oneOf).

use serde_json::Value;

/// `schema` with its `$ref` followed (`#/components/schemas/…` only).
pub fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/components/schemas/")) {
        Some(name) => resolve(doc, &doc["components"]["schemas"][name]),
        None => schema,
    }
}

fn type_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Why `value` (at `at`) breaks `schema`: every field of an object must be one of its
/// properties, and every required property must be there.
pub fn check(doc: &Value, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
    let schema = resolve(doc, schema);
    if let Some(any) = schema["oneOf"].as_array() {
        if any.iter().any(|s| check(doc, s, value, at).is_ok()) {
            return Ok(());
        }
        return Err(format!("{at}: {value} matches no oneOf branch"));
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    let is = type_of(value);
    if !types.is_empty() && !types.iter().any(|t| *t == is || (*t == "number" && is == "integer")) {
        return Err(format!("{at}: {value} is {is}, not {types:?}"));
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        return Err(format!("{at}: {value} is not one of {allowed:?}"));
    }
    let Value::Object(fields) = value else { return Ok(()) };
    let properties = schema["properties"].as_object().ok_or(format!("{at}: no properties in {schema}"))?;
    for (name, v) in fields {
        let property = properties.get(name).ok_or(format!("{at}.{name} is not a property of the schema"))?;
        check(doc, property, v, &format!("{at}.{name}"))?;
    }
    for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        if !fields.contains_key(name) {
            return Err(format!("{at}.{name} is required by the schema but not in the answer"));
        }
    }
    Ok(())
}
