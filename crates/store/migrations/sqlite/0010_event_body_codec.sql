-- Raw event bodies may be stored compressed: the codec (NULL: as received; 'zstd').
ALTER TABLE events ADD COLUMN body_codec TEXT;
