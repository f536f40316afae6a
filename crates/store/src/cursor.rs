//! Opaque pagination cursors: `(time in ms, id)` of the last item, base64url-encoded.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::StoreError;

/// Encodes the position after an item.
pub fn encode(ms: i64, id: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{ms}:{id}"))
}

/// Decodes a cursor made by [`encode`].
pub fn decode(cursor: &str) -> Result<(i64, String), StoreError> {
    let bad = || {
        StoreError::Invalid(
            "cursor is not one this server issued; use next_cursor of the previous page".into(),
        )
    };
    let raw = URL_SAFE_NO_PAD.decode(cursor.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(raw).map_err(|_| bad())?;
    let (ms, id) = text.split_once(':').ok_or_else(bad)?;
    Ok((ms.parse().map_err(|_| bad())?, id.to_owned()))
}
