// Web Crypto on top of deno_crypto: what its (pinned) implementation lacks
// or gets wrong, fixed around its SubtleCrypto methods, and the internal
// static methods of its classes hidden from scripts.
//
// - encrypt/decrypt: AES-GCM with IVs of other lengths than 96 and 128 bits,
//   and decryption with tags shorter than 128 bits (deno_crypto rejects
//   both; WebCrypto allows them), done by op_runtime_aes_gcm.
// - deriveBits: a length that is not a multiple of 8 leaves the unused bits
//   of the last byte zero.
// - exportKey: Ed25519 JWKs carry `alg: "Ed25519"`.
// - sign/verify: ECDSA on P-384 with SHA-1 (deno_crypto refuses a digest
//   shorter than half the field), done by op_runtime_ecdsa_p384_sha1.
// - sign/verify: KMAC's output length is `length` in `KmacParams` as the
//   WICG draft names it now (deno_crypto reads the older `outputLength`).
// - digest: cSHAKE128 and cSHAKE256 (WICG's modern algorithms for WebCrypto,
//   `CShakeParams`), which deno_crypto lacks, done by op_runtime_cshake.
// - importKey: the JWK checks deno_crypto skips (EC: `crv` and the lengths of
//   the coordinates; OKP: `x` present and matching `d`, Ed25519's `alg`),
//   made once deno_crypto accepted the key: they all throw DataError, which
//   the spec puts after every check deno_crypto does.
//
// Each replacement keeps the name, `length` and property attributes of the
// method it replaces, and does what it adds after deno_crypto converted the
// arguments (or before, only where the conversion has no side effect).
import { core, primordials } from "ext:core/mod.js";
import * as web from "ext:runtime/00_web.js";

const {
  ArrayBufferIsView,
  ArrayBufferPrototypeGetByteLength,
  ArrayBufferPrototypeSlice,
  ArrayPrototypeIncludes,
  DataViewPrototypeGetBuffer,
  DataViewPrototypeGetByteLength,
  DataViewPrototypeGetByteOffset,
  FunctionPrototypeCall,
  MathTrunc,
  ObjectDefineProperty,
  ObjectGetOwnPropertyDescriptor,
  ObjectHasOwn,
  ReflectDeleteProperty,
  StringPrototypeCharCodeAt,
  StringPrototypeReplace,
  StringPrototypeToUpperCase,
  TypedArrayPrototypeGetBuffer,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeGetByteOffset,
  TypedArrayPrototypeGetSymbolToStringTag,
  TypedArrayPrototypeSlice,
  Uint8Array,
} = primordials;
const { op_runtime_aes_gcm, op_runtime_cshake, op_runtime_ecdsa_p384_sha1 } =
  core.ops;
const { webidl } = web;
const { Crypto, CryptoKey, SubtleCrypto } = web.crypto;
const { DOMException } = web.domException;

const SubtleCryptoPrototype = SubtleCrypto.prototype;
const keyGetter = (name) =>
  ObjectGetOwnPropertyDescriptor(CryptoKey.prototype, name).get;
const getKeyAlgorithm = keyGetter("algorithm");
const getKeyUsages = keyGetter("usages");
const getKeyType = keyGetter("type");

// deno_crypto's internal statics (for its Node.js interop, structured clone
// and lazy singletons): `exportNodeMaterial` hands out the bytes of any key,
// extractable or not. Kept here, removed from the classes scripts see.
const exportNodeMaterial = CryptoKey.exportNodeMaterial;
const fromCloneData = CryptoKey.fromCloneData;

// `crypto` and `crypto.subtle` are minted on first use (they live on the
// C++ heap, which does not exist at build time) by deno_crypto's lazy
// singletons, which call these statics. They are removed from the classes
// scripts see and put back only for the minting.
const mintingStatics = [
  [Crypto, "create"],
  [Crypto, "registerSymbols"],
  [SubtleCrypto, "create"],
];
for (let i = 0; i < mintingStatics.length; ++i) {
  const { 0: klass, 1: name } = mintingStatics[i];
  mintingStatics[i] = [klass, name, ObjectGetOwnPropertyDescriptor(klass, name)];
}
let cryptoMinted = false;

/** The global `crypto`, minted on first use. */
function getCrypto() {
  if (!cryptoMinted) {
    for (let i = 0; i < mintingStatics.length; ++i) {
      const { 0: klass, 1: name, 2: descriptor } = mintingStatics[i];
      ObjectDefineProperty(klass, name, descriptor);
    }
    try {
      void web.crypto.crypto;
    } finally {
      for (let i = 0; i < mintingStatics.length; ++i) {
        const { 0: klass, 1: name } = mintingStatics[i];
        ReflectDeleteProperty(klass, name);
      }
    }
    cryptoMinted = true;
  }
  return web.crypto.crypto;
}

// Build time: takes deno_crypto's internal statics away from the classes
// (into the snapshot as it is, so no isolate pays for it).
function hideCryptoInternals() {
  // deno_crypto's structured-clone callback reads
  // `CryptoKey.fromCloneData` when it runs: replace it.
  core.getCloneableDeserializers().CryptoKey = (data) =>
    FunctionPrototypeCall(fromCloneData, CryptoKey, data);
  for (const name of ["exportNodeMaterial", "fromCloneData", "importSync"]) {
    ReflectDeleteProperty(CryptoKey, name);
  }
  for (let i = 0; i < mintingStatics.length; ++i) {
    const { 0: klass, 1: name } = mintingStatics[i];
    ReflectDeleteProperty(klass, name);
  }
}

// Replaces `SubtleCrypto.prototype[name]` by `method`, with the `length` of
// the original.
function replaceMethod(name, method) {
  const original = SubtleCryptoPrototype[name];
  ObjectDefineProperty(method, "length", {
    __proto__: null,
    value: original.length,
    configurable: true,
  });
  ObjectDefineProperty(SubtleCryptoPrototype, name, {
    __proto__: null,
    value: method,
    writable: true,
    enumerable: true,
    configurable: true,
  });
}

const invalidAccess = (message) =>
  new DOMException(message, "InvalidAccessError");
const operationError = (message) =>
  new DOMException(message, "OperationError");
const dataError = (message) => new DOMException(message, "DataError");

// A copy of the bytes of a BufferSource (already converted).
function copyBytes(source) {
  if (!ArrayBufferIsView(source)) {
    return new Uint8Array(ArrayBufferPrototypeSlice(source));
  }
  if (TypedArrayPrototypeGetSymbolToStringTag(source) !== undefined) {
    return TypedArrayPrototypeSlice(
      new Uint8Array(
        TypedArrayPrototypeGetBuffer(source),
        TypedArrayPrototypeGetByteOffset(source),
        TypedArrayPrototypeGetByteLength(source),
      ),
    );
  }
  return TypedArrayPrototypeSlice(
    new Uint8Array(
      DataViewPrototypeGetBuffer(source),
      DataViewPrototypeGetByteOffset(source),
      DataViewPrototypeGetByteLength(source),
    ),
  );
}

const byteLength = (source) =>
  ArrayBufferIsView(source)
    ? (TypedArrayPrototypeGetSymbolToStringTag(source) !== undefined
      ? TypedArrayPrototypeGetByteLength(source)
      : DataViewPrototypeGetByteLength(source))
    : ArrayBufferPrototypeGetByteLength(source);

// ASCII case-insensitive, as algorithm names are matched.
const asciiUpper = (s) =>
  StringPrototypeReplace(s, /[a-z]+/g, StringPrototypeToUpperCase);

// The upper-cased name of an algorithm given as a dictionary (converted as
// WebIDL converts `name`), else null.
function dictionaryAlgorithmName(algorithm, prefix) {
  if (webidl.type(algorithm) !== "Object") return null;
  const name = algorithm.name;
  if (name === undefined) return null;
  return asciiUpper(webidl.converters.DOMString(name, prefix, "name"));
}

// --- encrypt / decrypt: AES-GCM ---------------------------------------------

// `AesGcmParams` from an algorithm whose name is AES-GCM (the dictionary
// conversion of the spec's "normalize an algorithm"), else null: that
// algorithm is left to deno_crypto as it is.
function aesGcmParams(algorithm, prefix) {
  if (dictionaryAlgorithmName(algorithm, prefix) !== "AES-GCM") return null;
  // Members in the order WebIDL converts them: name, then the
  // AesGcmParams members in lexicographic order.
  const params = { __proto__: null, name: "AES-GCM" };
  const additionalData = algorithm.additionalData;
  if (additionalData !== undefined) {
    params.additionalData = copyBytes(
      webidl.converters.BufferSource(additionalData, prefix, "additionalData"),
    );
  }
  const iv = algorithm.iv;
  if (iv === undefined) {
    throw new TypeError(`${prefix}: 'iv' is required in 'AesGcmParams'`);
  }
  params.iv = copyBytes(webidl.converters.BufferSource(iv, prefix, "iv"));
  const tagLength = algorithm.tagLength;
  if (tagLength !== undefined) {
    params.tagLength = webidl.converters.octet(
      tagLength,
      prefix,
      "tagLength",
      { enforceRange: true },
    );
  }
  return params;
}

function aesGcm(self, op, algorithm, key, data) {
  const prefix = `Failed to execute '${op}' on 'SubtleCrypto'`;
  webidl.assertBranded(self, SubtleCryptoPrototype);
  // The argument conversions (CryptoKey, BufferSource) first: they run no
  // script code, so doing them before reading the algorithm is unobservable.
  const keyAlgorithm = FunctionPrototypeCall(getKeyAlgorithm, key);
  data = webidl.converters.BufferSource(data, prefix, "Argument 3");
  const params = aesGcmParams(algorithm, prefix);
  const original = originals[op];
  if (params === null) {
    return FunctionPrototypeCall(original, self, algorithm, key, data);
  }
  const ivLength = TypedArrayPrototypeGetByteLength(params.iv);
  const tagLength = params.tagLength ?? 128;
  const supported = (ivLength === 12 || ivLength === 16) &&
    (op === "encrypt" || tagLength === 128);
  if (supported) {
    return FunctionPrototypeCall(original, self, params, key, data);
  }
  const bytes = copyBytes(data);
  if (keyAlgorithm.name !== "AES-GCM") {
    throw invalidAccess("The key is not an AES-GCM key");
  }
  if (!ArrayPrototypeIncludes(FunctionPrototypeCall(getKeyUsages, key), op)) {
    throw invalidAccess(`The key's usages do not include '${op}'`);
  }
  if (op === "encrypt" && byteLength(data) > 2 ** 39 - 256) {
    throw operationError("The plaintext is too long");
  }
  const keyBytes =
    FunctionPrototypeCall(exportNodeMaterial, CryptoKey, key).data;
  const out = op_runtime_aes_gcm(
    keyBytes,
    params.iv,
    params.additionalData ?? new Uint8Array(0),
    tagLength,
    bytes,
    op === "encrypt",
  );
  const offset = TypedArrayPrototypeGetByteOffset(out);
  return ArrayBufferPrototypeSlice(
    TypedArrayPrototypeGetBuffer(out),
    offset,
    offset + TypedArrayPrototypeGetByteLength(out),
  );
}

const originals = {
  __proto__: null,
  encrypt: SubtleCryptoPrototype.encrypt,
  decrypt: SubtleCryptoPrototype.decrypt,
};
for (const op of ["encrypt", "decrypt"]) {
  replaceMethod(op, {
    async [op](algorithm, key, data) {
      webidl.requiredArguments(
        arguments.length,
        3,
        `Failed to execute '${op}' on 'SubtleCrypto'`,
      );
      return aesGcm(this, op, algorithm, key, data);
    },
  }[op]);
}

// --- digest: cSHAKE ------------------------------------------------------------

// The cSHAKE variant (128 or 256) an algorithm names, else 0: that
// algorithm is left to deno_crypto as it is.
function cshakeVariant(algorithm, prefix) {
  const name = typeof algorithm === "string"
    ? asciiUpper(algorithm)
    : dictionaryAlgorithmName(algorithm, prefix);
  switch (name) {
    case "CSHAKE128":
      return 128;
    case "CSHAKE256":
      return 256;
    default:
      return 0;
  }
}

const originalDigest = SubtleCryptoPrototype.digest;
replaceMethod("digest", {
  async digest(algorithm, data) {
    const prefix = "Failed to execute 'digest' on 'SubtleCrypto'";
    webidl.assertBranded(this, SubtleCryptoPrototype);
    webidl.requiredArguments(arguments.length, 2, prefix);
    const variant = cshakeVariant(algorithm, prefix);
    if (variant === 0) {
      return FunctionPrototypeCall(originalDigest, this, algorithm, data);
    }
    data = webidl.converters.BufferSource(data, prefix, "Argument 2");
    // `CShakeParams`, its members in lexicographic order: customization,
    // functionName, length (required; in bits).
    const params = webidl.type(algorithm) === "Object" ? algorithm : {};
    const optionalBytes = (value, member) =>
      value === undefined
        ? new Uint8Array(0)
        : copyBytes(webidl.converters.BufferSource(value, prefix, member));
    const customization = optionalBytes(params.customization, "customization");
    const functionName = optionalBytes(params.functionName, "functionName");
    if (params.length === undefined) {
      throw new TypeError(`${prefix}: 'length' is required in 'CShakeParams'`);
    }
    const length = webidl.converters["unsigned long"](
      params.length,
      prefix,
      "length",
    );
    if (length % 8 !== 0) {
      throw operationError("The length must be a multiple of 8 bits");
    }
    const out = op_runtime_cshake(
      variant,
      length / 8,
      functionName,
      customization,
      copyBytes(data),
    );
    return TypedArrayPrototypeGetBuffer(out);
  },
}.digest);

// --- sign / verify: ECDSA P-384 with SHA-1 ----------------------------------

// Whether `algorithm` is ECDSA with SHA-1 and `key` an ECDSA P-384 key of
// `type` that may be used for `op`: the one case deno_crypto gets wrong.
// Anything else (errors included) is left to deno_crypto.
function isEcdsaP384Sha1(algorithm, key, op, type, prefix) {
  if (dictionaryAlgorithmName(algorithm, prefix) !== "ECDSA") return false;
  let hash = algorithm.hash;
  if (webidl.type(hash) === "Object") hash = hash.name;
  if (typeof hash !== "string" || asciiUpper(hash) !== "SHA-1") return false;
  let keyAlgorithm;
  try {
    keyAlgorithm = FunctionPrototypeCall(getKeyAlgorithm, key);
  } catch {
    return false;
  }
  return keyAlgorithm.name === "ECDSA" && keyAlgorithm.namedCurve === "P-384" &&
    FunctionPrototypeCall(getKeyType, key) === type &&
    ArrayPrototypeIncludes(FunctionPrototypeCall(getKeyUsages, key), op);
}

// --- sign / verify: KMAC's `length` -----------------------------------------

// `KmacParams` as deno_crypto reads them (`outputLength`), from an algorithm
// whose name is KMAC128 or KMAC256, else null: that algorithm is left to
// deno_crypto as it is.
function kmacParams(algorithm, prefix) {
  const name = dictionaryAlgorithmName(algorithm, prefix);
  if (name !== "KMAC128" && name !== "KMAC256") return null;
  // Each member read once, in WebIDL's order: customization, length.
  const customization = algorithm.customization;
  let length = algorithm.length;
  // The draft's earlier name, which deno_crypto and Deno's users know.
  if (length === undefined) length = algorithm.outputLength;
  if (length === undefined) {
    throw new TypeError(`${prefix}: 'length' is required in 'KmacParams'`);
  }
  const params = {
    __proto__: null,
    name,
    outputLength: webidl.converters["unsigned long"](length, prefix, "length"),
  };
  if (customization !== undefined) {
    params.customization = copyBytes(
      webidl.converters.BufferSource(customization, prefix, "customization"),
    );
  }
  return params;
}

const EMPTY = new Uint8Array(0);
const originalSign = SubtleCryptoPrototype.sign;
replaceMethod("sign", {
  async sign(algorithm, key, data) {
    const prefix = "Failed to execute 'sign' on 'SubtleCrypto'";
    webidl.assertBranded(this, SubtleCryptoPrototype);
    webidl.requiredArguments(arguments.length, 3, prefix);
    const kmac = kmacParams(algorithm, prefix);
    if (
      kmac !== null ||
      !isEcdsaP384Sha1(algorithm, key, "sign", "private", prefix)
    ) {
      return FunctionPrototypeCall(
        originalSign,
        this,
        kmac ?? algorithm,
        key,
        data,
      );
    }
    const bytes = copyBytes(
      webidl.converters.BufferSource(data, prefix, "Argument 3"),
    );
    const der = FunctionPrototypeCall(exportNodeMaterial, CryptoKey, key).data;
    const signature = op_runtime_ecdsa_p384_sha1(der, bytes, EMPTY, true);
    return TypedArrayPrototypeGetBuffer(signature);
  },
}.sign);

const originalVerify = SubtleCryptoPrototype.verify;
replaceMethod("verify", {
  async verify(algorithm, key, signature, data) {
    const prefix = "Failed to execute 'verify' on 'SubtleCrypto'";
    webidl.assertBranded(this, SubtleCryptoPrototype);
    webidl.requiredArguments(arguments.length, 4, prefix);
    const kmac = kmacParams(algorithm, prefix);
    if (
      kmac !== null ||
      !isEcdsaP384Sha1(algorithm, key, "verify", "public", prefix)
    ) {
      return FunctionPrototypeCall(
        originalVerify,
        this,
        kmac ?? algorithm,
        key,
        signature,
        data,
      );
    }
    const signatureBytes = copyBytes(
      webidl.converters.BufferSource(signature, prefix, "Argument 3"),
    );
    const bytes = copyBytes(
      webidl.converters.BufferSource(data, prefix, "Argument 4"),
    );
    const der = FunctionPrototypeCall(exportNodeMaterial, CryptoKey, key).data;
    return op_runtime_ecdsa_p384_sha1(der, bytes, signatureBytes, false)[0] === 1;
  },
}.verify);

// --- deriveBits: unused bits are zero ---------------------------------------

const originalDeriveBits = SubtleCryptoPrototype.deriveBits;
replaceMethod("deriveBits", {
  async deriveBits(algorithm, baseKey, length = undefined) {
    const bits = await FunctionPrototypeCall(
      originalDeriveBits,
      this,
      algorithm,
      baseKey,
      length,
    );
    // Only a number: converting anything else again could run script code.
    const n = typeof length === "number" ? MathTrunc(length) : 0;
    if (
      n % 8 !== 0 && ArrayBufferPrototypeGetByteLength(bits) === (n + 7) >> 3
    ) {
      const view = new Uint8Array(bits);
      view[view.length - 1] &= (0xff << (8 - (n % 8))) & 0xff;
    }
    return bits;
  },
}.deriveBits);

// --- exportKey: Ed25519 JWKs have alg ---------------------------------------

const originalExportKey = SubtleCryptoPrototype.exportKey;
replaceMethod("exportKey", {
  async exportKey(format, key) {
    const result = await FunctionPrototypeCall(
      originalExportKey,
      this,
      format,
      key,
    );
    if (
      webidl.type(result) === "Object" && !ArrayBufferIsView(result) &&
      result.kty === "OKP" && result.crv === "Ed25519" &&
      !ObjectHasOwn(result, "alg")
    ) {
      result.alg = "Ed25519";
    }
    return result;
  },
}.exportKey);

// --- importKey: JWK checks --------------------------------------------------

const EC_COORDINATE_BYTES = { "P-256": 32, "P-384": 48, "P-521": 66 };
const OKP_NAMES = ["Ed25519", "X25519", "X448"];

// Bytes a base64url string (without padding) decodes to.
const base64urlBytes = (s) =>
  typeof s === "string" ? (s.length * 6) >> 3 : -1;

function base64urlDecode(s) {
  let b64 = StringPrototypeReplace(
    StringPrototypeReplace(s, /-/g, "+"),
    /_/g,
    "/",
  );
  while (b64.length % 4 !== 0) b64 += "=";
  const binary = web.base64.atob(b64);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) {
    bytes[i] = StringPrototypeCharCodeAt(binary, i);
  }
  return bytes;
}

async function checkJwk(self, key, jwk) {
  const algorithm = FunctionPrototypeCall(getKeyAlgorithm, key);
  const name = algorithm.name;
  const isPrivate = FunctionPrototypeCall(getKeyType, key) === "private";
  if (name === "ECDH" || name === "ECDSA") {
    const curve = algorithm.namedCurve;
    if (jwk.crv !== curve) {
      throw dataError("The JWK 'crv' member does not match the named curve");
    }
    const n = EC_COORDINATE_BYTES[curve];
    if (
      base64urlBytes(jwk.x) !== n || base64urlBytes(jwk.y) !== n ||
      (isPrivate && base64urlBytes(jwk.d) !== n)
    ) {
      throw dataError("A JWK coordinate has the wrong length for the curve");
    }
    return;
  }
  if (!ArrayPrototypeIncludes(OKP_NAMES, name)) return;
  if (
    name === "Ed25519" && jwk.alg !== undefined && jwk.alg !== "Ed25519" &&
    jwk.alg !== "EdDSA"
  ) {
    throw dataError("The JWK 'alg' member is not 'Ed25519' or 'EdDSA'");
  }
  if (!isPrivate) return;
  if (typeof jwk.x !== "string") {
    throw dataError("The JWK of a private key has no 'x' member");
  }
  // The key pair is valid: `x` is the public key of `d`.
  const publicKey = await FunctionPrototypeCall(
    originalGetPublicKey,
    self,
    key,
    name === "Ed25519" ? ["verify"] : [],
  );
  const raw = new Uint8Array(
    await FunctionPrototypeCall(originalExportKey, self, "raw", publicKey),
  );
  let x;
  try {
    x = base64urlDecode(jwk.x);
  } catch {
    throw dataError("The JWK 'x' member is not base64url");
  }
  let same = x.length === raw.length;
  for (let i = 0; same && i < raw.length; i++) same = x[i] === raw[i];
  if (!same) {
    throw dataError("The JWK 'x' member is not the public key of 'd'");
  }
}

const originalImportKey = SubtleCryptoPrototype.importKey;
const originalGetPublicKey = SubtleCryptoPrototype.getPublicKey;
replaceMethod("importKey", {
  async importKey(format, keyData, algorithm, extractable, keyUsages) {
    const key = await FunctionPrototypeCall(
      originalImportKey,
      this,
      format,
      keyData,
      algorithm,
      extractable,
      keyUsages,
    );
    if (format === "jwk" && webidl.type(keyData) === "Object") {
      await checkJwk(this, key, keyData);
    }
    return key;
  },
}.importKey);

export { getCrypto, hideCryptoInternals };
