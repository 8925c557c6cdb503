# Chef's encrypted data bag formats with Ruby's OpenSSL, as lib/chef/encrypted_data_bag_item
# does it (an independent cross-check for tests/test_encrypted_data_bag.py; needs only Ruby).
# Usage: ruby chef_edb.rb encrypt SECRET_FILE JSON_VALUE  -> {"0": ..., "1": ..., "2": ..., "3": ...}
#        ruby chef_edb.rb decrypt SECRET_FILE             (encrypted value as JSON on stdin) -> JSON value
require "openssl"
require "base64"
require "json"
require "yaml"

mode, path, plain = ARGV
secret = IO.read(path).strip # as Chef::EncryptedDataBagItem.load_secret

def cbc(secret)
  c = OpenSSL::Cipher.new("aes-256-cbc")
  c.encrypt
  c.key = OpenSSL::Digest.digest("SHA256", secret)
  iv = c.random_iv
  c.iv = iv
  [c, iv]
end

if mode == "encrypt"
  value = JSON.parse(plain)
  serialized = { "json_wrapper" => value }.to_json
  out = {}
  v0 = OpenSSL::Cipher.new("aes-256-cbc")
  v0.encrypt
  v0.pkcs5_keyivgen(secret)
  out["0"] = Base64.encode64(v0.update(YAML.dump(value)) + v0.final)
  c, iv = cbc(secret)
  out["1"] = { "encrypted_data" => Base64.encode64(c.update(serialized) + c.final),
               "iv" => Base64.encode64(iv), "version" => 1, "cipher" => "aes-256-cbc" }
  c, iv = cbc(secret)
  data = Base64.encode64(c.update(serialized) + c.final)
  out["2"] = { "encrypted_data" => data,
               "hmac" => Base64.encode64(OpenSSL::HMAC.digest(OpenSSL::Digest.new("sha256"), secret, data)),
               "iv" => Base64.encode64(iv), "version" => 2, "cipher" => "aes-256-cbc" }
  g = OpenSSL::Cipher.new("aes-256-gcm")
  g.encrypt
  g.key = OpenSSL::Digest.digest("SHA256", secret)
  iv = g.random_iv
  g.iv = iv
  g.auth_data = ""
  data = Base64.encode64(g.update(serialized) + g.final)
  out["3"] = { "encrypted_data" => data, "iv" => Base64.encode64(iv), "auth_tag" => Base64.encode64(g.auth_tag),
               "version" => 3, "cipher" => "aes-256-gcm" }
  puts out.to_json
else
  enc = JSON.parse($stdin.read)
  d = OpenSSL::Cipher.new("aes-256-gcm")
  d.decrypt
  d.key = OpenSSL::Digest.digest("SHA256", secret)
  d.iv = Base64.decode64(enc["iv"])
  d.auth_tag = Base64.decode64(enc["auth_tag"])
  d.auth_data = ""
  plain = d.update(Base64.decode64(enc["encrypted_data"])) + d.final
  puts JSON.generate(JSON.parse(plain)["json_wrapper"])
end
