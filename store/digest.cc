#include "store/digest.h"

#include <openssl/evp.h>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"

namespace mailrepl {
namespace {

// Hashes a sequence of length-prefixed fields, so "ab"+"c" != "a"+"bc".
class Hasher {
 public:
  explicit Hasher(absl::string_view domain) { Field(domain); }
  Hasher& Field(absl::string_view s) {
    uint64_t n = s.size();
    unsigned char len[8];
    for (int i = 0; i < 8; ++i) len[i] = static_cast<unsigned char>(n >> (8 * i));
    buf_.append(reinterpret_cast<const char*>(len), 8);
    buf_.append(s.data(), s.size());
    return *this;
  }
  Hasher& Field(uint64_t v) { return Field(absl::StrCat(v)); }
  Digest Finish() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int md_len = 0;
    EVP_Digest(buf_.data(), buf_.size(), md, &md_len, EVP_sha256(), nullptr);
    Digest d;
    for (int i = 0; i < 8; ++i) d.a = (d.a << 8) | md[i];
    for (int i = 8; i < 16; ++i) d.b = (d.b << 8) | md[i];
    return d;
  }

 private:
  std::string buf_;
};

}  // namespace

std::string Digest::Hex() const { return absl::BytesToHexString(Bytes()); }

std::string Digest::Bytes() const {
  std::string out(16, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(a >> (56 - 8 * i));
  for (int i = 0; i < 8; ++i) out[8 + i] = static_cast<char>(b >> (56 - 8 * i));
  return out;
}

bool Digest::FromBytes(absl::string_view bytes, Digest* out) {
  if (bytes.size() != 16) return false;
  out->a = out->b = 0;
  for (int i = 0; i < 8; ++i) out->a = (out->a << 8) | static_cast<uint8_t>(bytes[i]);
  for (int i = 8; i < 16; ++i) out->b = (out->b << 8) | static_cast<uint8_t>(bytes[i]);
  return true;
}

Digest MessageDigest(uint32_t uid, absl::string_view guid, const std::vector<std::string>& flags,
                     uint64_t modseq, bool expunged) {
  Hasher h("message");
  h.Field(uid).Field(guid).Field(modseq).Field(expunged ? 1 : 0).Field(flags.size());
  for (const auto& f : flags) h.Field(f);
  return h.Finish();
}

Digest MailboxAttributesDigest(absl::string_view mailbox_id, absl::string_view name,
                               uint32_t uidvalidity, uint32_t last_uid, uint64_t highest_modseq) {
  return Hasher("mailbox")
      .Field(mailbox_id)
      .Field(name)
      .Field(uidvalidity)
      .Field(last_uid)
      .Field(highest_modseq)
      .Finish();
}

Digest MailboxSlotDigest(absl::string_view mailbox_id, const Digest& mailbox_digest) {
  return Hasher("slot-mailbox").Field(mailbox_id).Field(mailbox_digest.Bytes()).Finish();
}

Digest QuotaDigest(absl::string_view user, uint64_t storage_limit, uint64_t message_limit) {
  return Hasher("quota").Field(user).Field(storage_limit).Field(message_limit).Finish();
}

}  // namespace mailrepl
