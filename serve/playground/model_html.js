// Model output (Markdown, which may hold raw HTML) as DOM that cannot act on the page: no script,
// no element that takes the page's ids or names (DOM clobbering: a `<textarea id="composer-input">`
// in an answer must not become the composer), no style, no form control, no frame, no fetch
// from elsewhere. Every piece of model text the page shows as HTML goes through `modelFragment`;
// everything else (analysis items, titles, errors) is set as text, never parsed as HTML.
import { Marked } from "./vendor/marked.esm.js";

// What an answer never needs and could use to act on the page: restyle it or overlay a fake
// interface (style, link, dialog), post or stand in for the page's own controls (form elements),
// load or embed from elsewhere (frames, objects, media, image maps, base, meta).
const FORBID_TAGS = [
  "style", "link", "meta", "base",
  "form", "input", "textarea", "button", "select", "option", "optgroup", "datalist", "label", "fieldset", "output",
  "iframe", "frame", "frameset", "object", "embed",
  "video", "audio", "source", "track", "picture", "map", "area", "dialog",
];
// `id`/`name` clobber the page's lookups, `style` restyles, the rest submit forms, fetch images
// (srcset, poster, background), open layers above the page (popover) or take keys and focus.
const FORBID_ATTR = [
  "id", "name", "style", "form", "formaction", "action", "srcset", "poster", "background",
  "popover", "popovertarget", "popovertargetaction", "autofocus", "accesskey", "contenteditable",
  "tabindex", "role",
];
const CONFIG = {
  USE_PROFILES: { html: true }, // no SVG or MathML
  FORBID_TAGS,
  FORBID_ATTR,
  ALLOW_DATA_ATTR: false, // the page's own code reads data-panelist, data-pick, data-setting
  ALLOW_ARIA_ATTR: false, // an answer does not speak for the page to assistive technology
  SANITIZE_DOM: true,
  SANITIZE_NAMED_PROPS: true,
  RETURN_DOM_FRAGMENT: true, // DOM from DOMPurify's inert document: no second parse of a string
};
// Images are shown only from data: URLs (already in the answer; nothing is fetched). Any other
// source becomes a link the reader may follow: an answer must not make the browser call a
// server of the model's choosing (a tracking pixel, or a URL carrying the conversation).
const INLINE_IMAGE = /^data:image\/(png|gif|jpeg|webp|avif|bmp);/i;

// GFM task lists as marks, not the <input> marked writes (form elements are not let through).
const markdown = new Marked({
  gfm: true,
  breaks: false,
  renderer: { checkbox: ({ checked }) => (checked ? "☑ " : "☐ ") },
});

let purifier = null;
const droppedImageSrc = new WeakMap();

function instance() {
  if (purifier || !window.DOMPurify) return purifier;
  // Our own instance: its hooks do not change the DOMPurify anything else on the page uses.
  purifier = window.DOMPurify(window);
  purifier.addHook("uponSanitizeAttribute", (node, data) => {
    if (data.attrName === "src" && node.nodeName === "IMG" && !INLINE_IMAGE.test(data.attrValue)) {
      droppedImageSrc.set(node, data.attrValue);
      data.keepAttr = false;
    } else if (data.attrName === "class") {
      // Only marked's `language-*` (for highlighting): the page's own classes would let an answer
      // dress up as the page's interface.
      const kept = data.attrValue.split(/\s+/).filter((c) => /^language-[\w+#.-]+$/.test(c));
      data.attrValue = kept.join(" ");
      data.keepAttr = kept.length > 0;
    }
  });
  purifier.addHook("afterSanitizeAttributes", (node) => {
    if (node.nodeName === "A" && node.hasAttribute("href")) {
      node.setAttribute("rel", "noopener noreferrer");
      node.setAttribute("target", "_blank");
    }
  });
  return purifier;
}

function httpUrl(value) {
  try {
    const url = new URL(String(value), location.href);
    return ["http:", "https:"].includes(url.protocol) ? url.href : null;
  } catch {
    return null;
  }
}

function imageLink(img, src) {
  const label = `image: ${img.getAttribute("alt") || src}`;
  const href = httpUrl(src);
  if (!href) return document.createTextNode(`[${label}]`);
  const link = document.createElement("a");
  Object.assign(link, { href, rel: "noopener noreferrer", target: "_blank", textContent: label });
  return link;
}

/** Markdown from a model as a DocumentFragment safe to insert; plain text when DOMPurify is
 * missing (the page never inserts unsanitised HTML). */
export function modelFragment(text) {
  const purify = instance();
  if (!purify?.isSupported) {
    const fragment = document.createDocumentFragment();
    fragment.append(text || "");
    return fragment;
  }
  const clean = purify.sanitize(markdown.parse(text || ""), CONFIG);
  for (const img of clean.querySelectorAll("img")) {
    if (droppedImageSrc.has(img)) img.replaceWith(imageLink(img, droppedImageSrc.get(img)));
    else if (!img.hasAttribute("src")) img.remove();
  }
  return clean;
}
