//! Workers' `HTMLRewriter` (`js/60_html_rewriter.js`) on Cloudflare's own
//! streaming rewriter, lol_html.
//!
//! lol_html calls its handlers synchronously, from inside `write()`, and its
//! rewriter is not `Send`; a JavaScript handler may be async. So each
//! transform runs its rewriter on a thread of its own, in lock step with the
//! isolate: the thread asks for input ([`Message::NeedInput`]), hands over
//! output ([`Message::Output`]) and, for each piece of content a handler was
//! registered for, sends an [`Event`] and blocks until JavaScript answers with
//! the mutations its handler recorded. Only the kinds of content some handler
//! asked for ever cross; everything else is rewritten on the thread alone.
//!
//! Both channels are bounded (or lock-step), so neither side buffers a
//! document whole. Dropping the resource (stream done, cancelled, failed, or
//! the isolate gone) disconnects both channels, and the thread, blocked on
//! one of them, sees it and ends.

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::mpsc as std_mpsc;

use deno_core::convert::Uint8Array;
use deno_core::{
  op2, AsyncRefCell, CancelFuture, CancelHandle, OpState, RcRef, Resource, ResourceId,
};
use deno_error::JsErrorBox;
use lol_html::html_content::{Comment, ContentType, Element, EndTag, TextChunk};
use lol_html::{
  AsciiCompatibleEncoding, DocumentContentHandlers, ElementContentHandlers, HandlerResult,
  HtmlRewriter, Selector, Settings,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// Output is handed to JavaScript in pieces of about this size.
const OUTPUT_CHUNK: usize = 64 * 1024;
/// Messages the thread may send ahead of JavaScript taking them.
const MESSAGES_AHEAD: usize = 8;
/// How long either side spins for the other's next message before it
/// sleeps. A handler's answer or the thread's next event usually comes
/// within a few microseconds; sleeping and being woken (a futex on the
/// thread's side, an event-loop turn on the isolate's) costs ten times
/// that, and would be paid on every element the handlers see.
const SPIN: std::time::Duration = std::time::Duration::from_micros(30);

/// Polls `try_once` until it yields or `SPIN` has passed.
fn spin_for<T>(mut try_once: impl FnMut() -> Option<T>) -> Option<T> {
  let start = std::time::Instant::now();
  loop {
    for _ in 0..64 {
      if let Some(value) = try_once() {
        return Some(value);
      }
      std::hint::spin_loop();
    }
    if start.elapsed() >= SPIN {
      return None;
    }
  }
}

// Handler kinds: bits of a selector's or a document handler's flags.
const ELEMENT: u32 = 1;
const COMMENTS: u32 = 2;
const TEXT: u32 = 4;
const DOCTYPE: u32 = 8;
const END: u32 = 16;

// What `op_html_rewriter_next` returns.
const NEXT_OUTPUT: u32 = 0;
const NEXT_INPUT: u32 = 1;
const NEXT_EVENT: u32 = 2;
const NEXT_DONE: u32 = 3;
const NEXT_ERROR: u32 = 4;
/// `op_html_rewriter_try_next` found nothing yet: await `op_html_rewriter_next`.
const NEXT_PENDING: u32 = 5;

/// A piece of content some JavaScript handler is to see. `handler` is the
/// index of the `.on()` / `.onDocument()` registration (in registration
/// order, over both), or for an end tag the id JavaScript gave its handler.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
  #[serde(rename_all = "camelCase")]
  Element {
    handler: u32,
    tag_name: String,
    #[serde(rename = "namespaceURI")]
    namespace_uri: &'static str,
    attributes: Vec<(String, String)>,
    removed: bool,
    can_have_content: bool,
  },
  #[serde(rename_all = "camelCase")]
  Text {
    handler: u32,
    text: String,
    last_in_text_node: bool,
    removed: bool,
  },
  #[serde(rename_all = "camelCase")]
  Comment {
    handler: u32,
    text: String,
    removed: bool,
  },
  #[serde(rename_all = "camelCase")]
  Doctype {
    handler: u32,
    name: Option<String>,
    public_id: Option<String>,
    system_id: Option<String>,
    removed: bool,
  },
  #[serde(rename_all = "camelCase")]
  EndTag { handler: u32, name: String },
  #[serde(rename_all = "camelCase")]
  End { handler: u32 },
}

/// One recorded mutation: `(code, s1, s2, n)`; `n` is the `html` flag of
/// content (0 or 1), or the id of an end-tag handler.
pub type Mutation = (u32, String, String, u32);

const M_SET_ATTRIBUTE: u32 = 0;
const M_REMOVE_ATTRIBUTE: u32 = 1;
const M_BEFORE: u32 = 2;
const M_AFTER: u32 = 3;
const M_PREPEND: u32 = 4;
const M_APPEND: u32 = 5;
const M_SET_INNER_CONTENT: u32 = 6;
const M_REPLACE: u32 = 7;
const M_REMOVE: u32 = 8;
const M_REMOVE_AND_KEEP_CONTENT: u32 = 9;
const M_SET_TAG_NAME: u32 = 10;
const M_ON_END_TAG: u32 = 11;
const M_SET_TEXT: u32 = 12;

enum Message {
  Output(Vec<u8>),
  NeedInput,
  Event(Event),
  Done,
  Error(String),
}

enum Reply {
  Input(Vec<u8>),
  InputEnd,
  Mutations(Vec<Mutation>),
}

/// A handler registration: `.on(selector, ...)` (Some) or `.onDocument()`
/// (None), with the kinds of content it has handlers for.
#[derive(Deserialize)]
pub struct Registration(Option<String>, u32);

pub struct RewriterResource {
  messages: AsyncRefCell<mpsc::Receiver<Message>>,
  replies: RefCell<Option<std_mpsc::Sender<Reply>>>,
  /// What `op_html_rewriter_next` last received.
  current: RefCell<Option<Message>>,
  cancel: CancelHandle,
}

/// Why the next message is an error when the thread is gone without one.
const THREAD_GONE: &str = "the HTMLRewriter's thread ended unexpectedly";

impl RewriterResource {
  /// Keeps `message` for the op JavaScript calls next, and says which one
  /// that is (`NEXT_*`).
  fn keep_current(&self, message: Message) -> u32 {
    let kind = match &message {
      Message::Output(_) => NEXT_OUTPUT,
      Message::NeedInput => NEXT_INPUT,
      Message::Event(_) => NEXT_EVENT,
      Message::Done => NEXT_DONE,
      Message::Error(_) => NEXT_ERROR,
    };
    *self.current.borrow_mut() = Some(message);
    kind
  }
}

impl Resource for RewriterResource {
  fn name(&self) -> Cow<'_, str> {
    "htmlRewriter".into()
  }

  fn close(self: Rc<Self>) {
    self.cancel.cancel();
    self.replies.borrow_mut().take();
  }
}

/// The rewriter thread's end of the channels, shared by every handler.
struct Bridge {
  messages: mpsc::Sender<Message>,
  replies: std_mpsc::Receiver<Reply>,
  output: RefCell<Vec<u8>>,
}

/// Why the thread stops early: JavaScript went away (nothing to report).
#[derive(Debug)]
struct Gone;

impl std::fmt::Display for Gone {
  fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    f.write_str("the HTMLRewriter's stream went away")
  }
}

impl std::error::Error for Gone {}

impl Bridge {
  fn send(&self, message: Message) -> Result<(), Gone> {
    self.messages.blocking_send(message).map_err(|_| Gone)
  }

  /// JavaScript's next reply: spun for briefly, then slept for.
  fn reply(&self) -> Result<Reply, std_mpsc::RecvError> {
    match spin_for(|| match self.replies.try_recv() {
      Ok(reply) => Some(Ok(reply)),
      Err(std_mpsc::TryRecvError::Empty) => None,
      Err(std_mpsc::TryRecvError::Disconnected) => Some(Err(std_mpsc::RecvError)),
    }) {
      Some(reply) => reply,
      None => self.replies.recv(),
    }
  }

  fn flush(&self) -> Result<(), Gone> {
    let out = std::mem::take(&mut *self.output.borrow_mut());
    if out.is_empty() {
      return Ok(());
    }
    self.send(Message::Output(out))
  }

  /// Sends an event and waits for the mutations its handler recorded.
  fn ask(&self, event: Event) -> Result<Vec<Mutation>, Box<dyn std::error::Error + Send + Sync>> {
    self.send(Message::Event(event))?;
    match self.reply() {
      Ok(Reply::Mutations(m)) => Ok(m),
      Ok(_) => Err("HTMLRewriter: input while a handler was running".into()),
      Err(_) => Err(Box::new(Gone)),
    }
  }
}

fn content_type(html: u32) -> ContentType {
  if html != 0 {
    ContentType::Html
  } else {
    ContentType::Text
  }
}

fn bad(code: u32) -> Box<dyn std::error::Error + Send + Sync> {
  format!("HTMLRewriter: mutation {code} does not apply here").into()
}

fn apply_to_element(
  bridge: &Rc<Bridge>,
  el: &mut Element<'_, '_>,
  mutations: Vec<Mutation>,
) -> HandlerResult {
  for (code, a, b, n) in mutations {
    match code {
      M_SET_ATTRIBUTE => el.set_attribute(&a, &b)?,
      M_REMOVE_ATTRIBUTE => el.remove_attribute(&a),
      M_BEFORE => el.before(&a, content_type(n)),
      M_AFTER => el.after(&a, content_type(n)),
      M_PREPEND => el.prepend(&a, content_type(n)),
      M_APPEND => el.append(&a, content_type(n)),
      M_SET_INNER_CONTENT => el.set_inner_content(&a, content_type(n)),
      M_REPLACE => el.replace(&a, content_type(n)),
      M_REMOVE => el.remove(),
      M_REMOVE_AND_KEEP_CONTENT => el.remove_and_keep_content(),
      M_SET_TAG_NAME => el.set_tag_name(&a)?,
      M_ON_END_TAG => {
        // As in workerd, a later onEndTag() replaces the earlier one.
        if let Some(handlers) = el.end_tag_handlers() {
          handlers.clear();
        }
        let bridge = bridge.clone();
        el.on_end_tag(Box::new(move |end: &mut EndTag<'_>| {
          let mutations = bridge.ask(Event::EndTag {
            handler: n,
            name: end.name(),
          })?;
          for (code, a, _, n) in mutations {
            match code {
              M_BEFORE => end.before(&a, content_type(n)),
              M_AFTER => end.after(&a, content_type(n)),
              M_REPLACE => end.replace(&a, content_type(n)),
              M_REMOVE => end.remove(),
              M_SET_TAG_NAME => end.set_name_str(a),
              other => return Err(bad(other)),
            }
          }
          Ok(())
        }))?;
      }
      other => return Err(bad(other)),
    }
  }
  Ok(())
}

fn comment_handler(
  bridge: &Rc<Bridge>,
  handler: u32,
) -> impl FnMut(&mut Comment<'_>) -> HandlerResult + 'static {
  let bridge = bridge.clone();
  move |c: &mut Comment<'_>| {
    let mutations = bridge.ask(Event::Comment {
      handler,
      text: c.text(),
      removed: c.removed(),
    })?;
    for (code, a, _, n) in mutations {
      match code {
        M_BEFORE => c.before(&a, content_type(n)),
        M_AFTER => c.after(&a, content_type(n)),
        M_REPLACE => c.replace(&a, content_type(n)),
        M_REMOVE => c.remove(),
        M_SET_TEXT => c.set_text(&a)?,
        other => return Err(bad(other)),
      }
    }
    Ok(())
  }
}

fn text_handler(
  bridge: &Rc<Bridge>,
  handler: u32,
) -> impl FnMut(&mut TextChunk<'_>) -> HandlerResult + 'static {
  let bridge = bridge.clone();
  move |t: &mut TextChunk<'_>| {
    let mutations = bridge.ask(Event::Text {
      handler,
      text: t.as_str().to_owned(),
      last_in_text_node: t.last_in_text_node(),
      removed: t.removed(),
    })?;
    for (code, a, _, n) in mutations {
      match code {
        M_BEFORE => t.before(&a, content_type(n)),
        M_AFTER => t.after(&a, content_type(n)),
        M_REPLACE => t.replace(&a, content_type(n)),
        M_REMOVE => t.remove(),
        other => return Err(bad(other)),
      }
    }
    Ok(())
  }
}

fn encoding(label: &str) -> AsciiCompatibleEncoding {
  encoding_rs::Encoding::for_label(label.as_bytes())
    .and_then(AsciiCompatibleEncoding::new)
    .unwrap_or_else(AsciiCompatibleEncoding::utf_8)
}

fn parse_selector(selector: &str) -> Result<Selector, JsErrorBox> {
  selector
    .parse::<Selector>()
    .map_err(|e| JsErrorBox::type_error(format!("The selector \"{selector}\" is invalid: {e}")))
}

fn run(
  registrations: Vec<(Option<String>, u32)>,
  encoding: AsciiCompatibleEncoding,
  bridge: Rc<Bridge>,
) {
  // Not strict, as in workerd: text that could be parsed more than one
  // way is rewritten anyway rather than failing the stream.
  let mut settings = Settings::new().with_encoding(encoding).with_strict(false);
  for (index, (selector, kinds)) in registrations.into_iter().enumerate() {
    let handler = index as u32;
    match selector {
      Some(selector) => {
        let Ok(selector) = selector.parse::<Selector>() else {
          return;
        };
        let mut h = ElementContentHandlers::default();
        if kinds & ELEMENT != 0 {
          let bridge = bridge.clone();
          h = h.element(move |el: &mut Element<'_, '_>| {
            let event = Event::Element {
              handler,
              tag_name: el.tag_name(),
              namespace_uri: el.namespace_uri(),
              attributes: el
                .attributes()
                .iter()
                .map(|a| (a.name(), a.value()))
                .collect(),
              removed: el.removed(),
              can_have_content: el.can_have_content(),
            };
            let mutations = bridge.ask(event)?;
            apply_to_element(&bridge, el, mutations)
          });
        }
        if kinds & COMMENTS != 0 {
          h = h.comments(comment_handler(&bridge, handler));
        }
        if kinds & TEXT != 0 {
          h = h.text(text_handler(&bridge, handler));
        }
        settings = settings.append_element_content_handler((Cow::Owned(selector), h));
      }
      None => {
        let mut h = DocumentContentHandlers::default();
        if kinds & DOCTYPE != 0 {
          let bridge = bridge.clone();
          h = h.doctype(move |d: &mut lol_html::html_content::Doctype<'_>| {
            let mutations = bridge.ask(Event::Doctype {
              handler,
              name: d.name(),
              public_id: d.public_id(),
              system_id: d.system_id(),
              removed: d.removed(),
            })?;
            for (code, ..) in mutations {
              match code {
                M_REMOVE => d.remove(),
                other => return Err(bad(other)),
              }
            }
            Ok(())
          });
        }
        if kinds & COMMENTS != 0 {
          h = h.comments(comment_handler(&bridge, handler));
        }
        if kinds & TEXT != 0 {
          h = h.text(text_handler(&bridge, handler));
        }
        if kinds & END != 0 {
          let bridge = bridge.clone();
          h = h.end(move |end: &mut lol_html::html_content::DocumentEnd<'_>| {
            let mutations = bridge.ask(Event::End { handler })?;
            for (code, a, _, n) in mutations {
              match code {
                M_APPEND => end.append(&a, content_type(n)),
                other => return Err(bad(other)),
              }
            }
            Ok(())
          });
        }
        settings = settings.append_document_content_handler(h);
      }
    }
  }

  let sink_bridge = bridge.clone();
  let mut rewriter = HtmlRewriter::new(settings, move |chunk: &[u8]| {
    let mut out = sink_bridge.output.borrow_mut();
    out.extend_from_slice(chunk);
    if out.len() >= OUTPUT_CHUNK {
      let full = std::mem::take(&mut *out);
      drop(out);
      // A send that fails means JavaScript went away: the next ask or
      // receive notices it and stops the thread.
      let _ = sink_bridge.send(Message::Output(full));
    }
  });

  let result = loop {
    if bridge.flush().is_err() || bridge.send(Message::NeedInput).is_err() {
      return;
    }
    match bridge.reply() {
      Ok(Reply::Input(chunk)) => {
        if let Err(e) = rewriter.write(&chunk) {
          break Err(e);
        }
      }
      Ok(Reply::InputEnd) => break rewriter.end(),
      Ok(Reply::Mutations(_)) => break Ok(()),
      Err(_) => return,
    }
  };
  match result {
    Ok(()) => {
      if bridge.flush().is_ok() {
        let _ = bridge.send(Message::Done);
      }
    }
    Err(lol_html::errors::RewritingError::ContentHandlerError(e)) if e.is::<Gone>() => {}
    Err(e) => {
      let _ = bridge.send(Message::Error(e.to_string()));
    }
  }
}

/// Throws a TypeError for a selector lol_html does not support.
#[op2(fast)]
pub fn op_html_rewriter_check_selector(#[string] selector: &str) -> Result<(), JsErrorBox> {
  parse_selector(selector).map(|_| ())
}

/// Starts a transform's rewriter thread; `encoding` is the response's
/// charset label ("" for UTF-8).
#[op2]
#[smi]
pub fn op_html_rewriter_create(
  state: &mut OpState,
  #[serde] registrations: Vec<Registration>,
  #[string] encoding_label: String,
) -> Result<ResourceId, JsErrorBox> {
  let mut parsed = Vec::with_capacity(registrations.len());
  for Registration(selector, kinds) in registrations {
    if let Some(selector) = &selector {
      parse_selector(selector)?;
    }
    parsed.push((selector, kinds));
  }
  let encoding = encoding(&encoding_label);
  let (message_tx, message_rx) = mpsc::channel(MESSAGES_AHEAD);
  let (reply_tx, reply_rx) = std_mpsc::channel();
  std::thread::Builder::new()
    .name("htmlrewriter".into())
    .spawn(move || {
      // lol_html's settings and handlers live on this thread only; its
      // selectors are parsed again here (checked above).
      let registrations = parsed;
      let bridge = Rc::new(Bridge {
        messages: message_tx,
        replies: reply_rx,
        output: RefCell::new(Vec::new()),
      });
      run(registrations, encoding, bridge);
    })
    .map_err(|e| JsErrorBox::generic(format!("HTMLRewriter: cannot start its thread: {e}")))?;
  Ok(state.resource_table.add(RewriterResource {
    messages: AsyncRefCell::new(message_rx),
    replies: RefCell::new(Some(reply_tx)),
    current: RefCell::new(None),
    cancel: CancelHandle::new(),
  }))
}

fn resource(state: &OpState, rid: ResourceId) -> Result<Rc<RewriterResource>, JsErrorBox> {
  state
    .resource_table
    .get::<RewriterResource>(rid)
    .map_err(JsErrorBox::from_err)
}

/// Waits for what the rewriter does next: output (`op_html_rewriter_output`),
/// a request for input, an event (`op_html_rewriter_event`), done, or an
/// error (`op_html_rewriter_error`).
#[op2]
#[smi]
pub async fn op_html_rewriter_next(
  state: Rc<RefCell<OpState>>,
  #[smi] rid: ResourceId,
) -> Result<u32, JsErrorBox> {
  let rewriter = resource(&state.borrow(), rid)?;
  let next = {
    let cancel = RcRef::map(&rewriter, |r| &r.cancel);
    let mut messages = RcRef::map(&rewriter, |r| &r.messages).borrow_mut().await;
    messages.recv().or_cancel(cancel).await
  };
  let message = match next {
    Ok(Some(message)) => message,
    Ok(None) => Message::Error(THREAD_GONE.into()),
    Err(_) => return Err(JsErrorBox::generic("the HTMLRewriter was cancelled")),
  };
  Ok(rewriter.keep_current(message))
}

/// What the rewriter does next, if it does so within a few microseconds
/// (`NEXT_PENDING` if not): saves an event-loop turn per event.
#[op2(fast)]
#[smi]
pub fn op_html_rewriter_try_next(
  state: &OpState,
  #[smi] rid: ResourceId,
) -> Result<u32, JsErrorBox> {
  let rewriter = resource(state, rid)?;
  let Some(mut messages) = RcRef::map(&rewriter, |r| &r.messages).try_borrow_mut() else {
    return Ok(NEXT_PENDING);
  };
  let message = spin_for(|| match messages.try_recv() {
    Ok(message) => Some(message),
    Err(mpsc::error::TryRecvError::Empty) => None,
    Err(mpsc::error::TryRecvError::Disconnected) => Some(Message::Error(THREAD_GONE.into())),
  });
  drop(messages);
  let Some(message) = message else {
    return Ok(NEXT_PENDING);
  };
  Ok(rewriter.keep_current(message))
}

fn take_current(state: &OpState, rid: ResourceId) -> Result<Option<Message>, JsErrorBox> {
  Ok(resource(state, rid)?.current.borrow_mut().take())
}

#[op2]
pub fn op_html_rewriter_output(
  state: &OpState,
  #[smi] rid: ResourceId,
) -> Result<Uint8Array, JsErrorBox> {
  match take_current(state, rid)? {
    Some(Message::Output(bytes)) => Ok(Uint8Array::from(bytes)),
    _ => Err(JsErrorBox::generic("HTMLRewriter: no output to take")),
  }
}

#[op2]
#[serde]
pub fn op_html_rewriter_event(
  state: &OpState,
  #[smi] rid: ResourceId,
) -> Result<Event, JsErrorBox> {
  match take_current(state, rid)? {
    Some(Message::Event(event)) => Ok(event),
    _ => Err(JsErrorBox::generic("HTMLRewriter: no event to take")),
  }
}

#[op2]
#[string]
pub fn op_html_rewriter_error(
  state: &OpState,
  #[smi] rid: ResourceId,
) -> Result<String, JsErrorBox> {
  match take_current(state, rid)? {
    Some(Message::Error(message)) => Ok(message),
    _ => Ok("HTMLRewriter failed".into()),
  }
}

fn reply(state: &OpState, rid: ResourceId, reply: Reply) -> Result<(), JsErrorBox> {
  let rewriter = resource(state, rid)?;
  let replies = rewriter.replies.borrow();
  match replies.as_ref() {
    Some(tx) if tx.send(reply).is_ok() => Ok(()),
    _ => Err(JsErrorBox::generic("the HTMLRewriter has stopped")),
  }
}

/// The next chunk of input (`op_html_rewriter_next` asked for it).
#[op2(fast)]
pub fn op_html_rewriter_write(
  state: &OpState,
  #[smi] rid: ResourceId,
  #[buffer] chunk: &[u8],
) -> Result<(), JsErrorBox> {
  reply(state, rid, Reply::Input(chunk.to_vec()))
}

/// The end of the input.
#[op2(fast)]
pub fn op_html_rewriter_end(state: &OpState, #[smi] rid: ResourceId) -> Result<(), JsErrorBox> {
  reply(state, rid, Reply::InputEnd)
}

/// The mutations the handler of the last event recorded.
#[op2]
pub fn op_html_rewriter_mutations(
  state: &OpState,
  #[smi] rid: ResourceId,
  #[serde] mutations: Vec<Mutation>,
) -> Result<(), JsErrorBox> {
  reply(state, rid, Reply::Mutations(mutations))
}
