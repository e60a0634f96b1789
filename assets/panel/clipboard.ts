/** Copying to the clipboard, and the Copy button that does it. */
import { h } from "./dom.ts";

/**
 * Copies `text`: through the Clipboard API where the page may use it (a secure context with the
 * document focused), else through a selected hidden text area, which also works on plain HTTP.
 * `near` is where that text area goes: inside an open modal dialog the rest of the page is inert.
 */
export async function copyText(text: string, near: Element): Promise<void> {
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return;
    } catch {
      // Refused (no permission, document not focused): try the selection below.
    }
  }
  const area = h("textarea", { class: "visually-hidden", readonly: true, tabindex: "-1", "aria-hidden": "true" });
  area.value = text;
  const focused = document.activeElement instanceof HTMLElement ? document.activeElement : null;
  near.append(area);
  area.select();
  const copied = document.execCommand("copy");
  area.remove();
  focused?.focus();
  if (!copied) throw new Error("the browser refused to copy; select the text and copy it by hand");
}

/**
 * A button that copies `text`: "Copy" (or `caption`), "Copied" for a moment after a click.
 * `label` names it for screen readers ("Copy key #12"); `done` hears the outcome, with the error
 * when copying failed; `focusKey` becomes its `data-focus` (see replaceKeepingFocus in refresh.ts).
 */
export function copyButton(
  text: string,
  options: { label: string; caption?: string; focusKey?: string; done?(error?: unknown): void },
): HTMLButtonElement {
  const caption = options.caption ?? "Copy";
  const button = h(
    "button",
    { type: "button", class: "secondary small copy", "aria-label": options.label, "data-focus": options.focusKey },
    caption,
  );
  let reset: ReturnType<typeof setTimeout> | null = null;
  button.addEventListener("click", async () => {
    try {
      await copyText(text, button.parentElement ?? button);
      button.textContent = "Copied";
      button.classList.add("copied");
      if (reset !== null) clearTimeout(reset);
      reset = setTimeout(() => {
        button.textContent = caption;
        button.classList.remove("copied");
      }, 2000);
      options.done?.();
    } catch (error) {
      options.done?.(error);
    }
  });
  return button;
}
