// `Date` reading the isolate's clock (ext/src/clock.rs) instead of the
// system's: with coarse time on it is the time of the last I/O event and
// does not advance while JavaScript runs, as in Workers; otherwise it is the
// system time, as before. V8's Date reads the system clock itself, so the
// global `Date` becomes a wrapper of it that gives the native constructor
// the time when it is called without arguments. Dates are still native Date
// objects (same prototype, `instanceof Date`, subclassing).
import { core, primordials } from "ext:core/mod.js";

const {
  DatePrototypeToString,
  ObjectDefineProperty,
  ReflectConstruct,
} = primordials;
const { op_date_now } = core.ops;

const NativeDate = globalThis.Date;

// The name and length (7) of the native constructor: `Date.length` is 7.
// deno-lint-ignore no-unused-vars
function Date(year, monthIndex, day, hours, minutes, seconds, ms) {
  if (new.target === undefined) {
    // Called as a function it ignores its arguments and gives today as text.
    return DatePrototypeToString(new NativeDate(op_date_now()));
  }
  if (arguments.length === 0) {
    return ReflectConstruct(NativeDate, [op_date_now()], new.target);
  }
  return ReflectConstruct(NativeDate, arguments, new.target);
}

ObjectDefineProperty(Date, "prototype", {
  __proto__: null,
  value: NativeDate.prototype,
  writable: false,
});
ObjectDefineProperty(NativeDate.prototype, "constructor", {
  __proto__: null,
  value: Date,
  writable: true,
  enumerable: false,
  configurable: true,
});
for (const name of ["parse", "UTC"]) {
  ObjectDefineProperty(Date, name, {
    __proto__: null,
    value: NativeDate[name],
    writable: true,
    enumerable: false,
    configurable: true,
  });
}
ObjectDefineProperty(Date, "now", {
  __proto__: null,
  // A method without a prototype or [[Construct]], as the native one.
  value: { now() { return op_date_now(); } }.now,
  writable: true,
  enumerable: false,
  configurable: true,
});
ObjectDefineProperty(globalThis, "Date", {
  __proto__: null,
  value: Date,
  writable: true,
  enumerable: false,
  configurable: true,
});
