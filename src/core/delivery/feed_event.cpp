// The output plugin's binary record for one event. Pure C++.
#include "core/delivery/feed_event.hpp"

#include <limits>

#include "core/error.hpp"

namespace amebo::delivery {

namespace {

// The record layout this code writes and reads.
constexpr unsigned char kRecordVersion = 1;

// Appends value as 8 bytes, most significant first.
void AppendInt64(std::string *record, int64_t value) {
    auto bits = static_cast<uint64_t>(value);
    for (int shift = 56; shift >= 0; shift -= 8)
        record->push_back(static_cast<char>((bits >> shift) & 0xff));
}

// Appends text as a 4-byte big-endian length followed by its bytes.
void AppendString(std::string *record, std::string_view text) {
    if (text.size() > std::numeric_limits<uint32_t>::max())
        throw Error(sqlstate::kProgramLimitExceeded, "event field is too long for a feed record");
    auto length = static_cast<uint32_t>(text.size());
    for (int shift = 24; shift >= 0; shift -= 8)
        record->push_back(static_cast<char>((length >> shift) & 0xff));
    record->append(text);
}

// Reads a record front to back, never past its end.
class RecordReader {
  public:
    explicit RecordReader(std::string_view record) : record_(record) {}

    // Reads one byte; false when none is left.
    bool ReadByte(unsigned char *value) {
        if (remaining() < 1)
            return false;
        *value = static_cast<unsigned char>(record_[offset_++]);
        return true;
    }

    // Reads an 8-byte big-endian integer; false when fewer bytes are left.
    bool ReadInt64(int64_t *value) {
        if (remaining() < 8)
            return false;
        uint64_t bits = 0;
        for (int i = 0; i < 8; i++)
            bits = (bits << 8) | static_cast<unsigned char>(record_[offset_++]);
        *value = static_cast<int64_t>(bits);
        return true;
    }

    // Reads a length-prefixed string; false when the length runs past the record's end.
    bool ReadString(std::string *value) {
        if (remaining() < 4)
            return false;
        uint32_t length = 0;
        for (int i = 0; i < 4; i++)
            length = (length << 8) | static_cast<unsigned char>(record_[offset_++]);
        if (length > remaining())
            return false;
        value->assign(record_.substr(offset_, length));
        offset_ += length;
        return true;
    }

    // Bytes not read yet.
    size_t remaining() const { return record_.size() - offset_; }

  private:
    std::string_view record_;
    size_t offset_ = 0;
};

// Reads the fields after the version byte, in FeedEvent's order.
bool ReadFields(RecordReader *reader, FeedEvent *event) {
    return reader->ReadInt64(&event->position) && reader->ReadString(&event->event_id) &&
           reader->ReadString(&event->stream) && reader->ReadInt64(&event->version) &&
           reader->ReadString(&event->action) && reader->ReadString(&event->payload) &&
           reader->ReadString(&event->metadata) && reader->ReadInt64(&event->recorded_at);
}

// Stores message in *error when the caller asked for it; returns false for the caller to return.
bool Fail(std::string *error, std::string message) {
    if (error != nullptr)
        *error = std::move(message);
    return false;
}

} // namespace

std::string EncodeFeedEvent(const FeedEvent &event) {
    std::string record;
    record.reserve(1 + 3 * 8 + 5 * 4 + event.event_id.size() + event.stream.size() +
                   event.action.size() + event.payload.size() + event.metadata.size());
    record.push_back(static_cast<char>(kRecordVersion));
    AppendInt64(&record, event.position);
    AppendString(&record, event.event_id);
    AppendString(&record, event.stream);
    AppendInt64(&record, event.version);
    AppendString(&record, event.action);
    AppendString(&record, event.payload);
    AppendString(&record, event.metadata);
    AppendInt64(&record, event.recorded_at);
    return record;
}

bool DecodeFeedEvent(std::string_view record, FeedEvent *event, std::string *error) {
    RecordReader reader(record);
    unsigned char version = 0;
    if (!reader.ReadByte(&version))
        return Fail(error, "feed record is empty");
    if (version != kRecordVersion)
        return Fail(error, "feed record has unknown version " + std::to_string(version));
    FeedEvent decoded;
    if (!ReadFields(&reader, &decoded))
        return Fail(error, "feed record is truncated");
    if (reader.remaining() != 0)
        return Fail(error,
                    "feed record has " + std::to_string(reader.remaining()) + " trailing bytes");
    *event = std::move(decoded);
    return true;
}

} // namespace amebo::delivery
