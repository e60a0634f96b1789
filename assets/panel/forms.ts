/** Labelled form fields and the display of server errors next to the field they name. */
import { ApiError } from "./api.ts";
import { h, uniqueId } from "./dom.ts";

export interface FieldOptions {
  /** The control's name: the API field it fills, so that server errors find it. */
  name: string;
  label: string;
  type?: "text" | "password" | "search" | "datetime-local";
  value?: string;
  hint?: string;
  required?: boolean;
  autocomplete?: string;
  minlength?: number;
  maxlength?: number;
  placeholder?: string;
  /** Makes the field a <select> with these choices. */
  choices?: readonly { value: string; label: string }[];
  /** Makes the field a <textarea> of this many rows (for pasted text such as a PEM certificate). */
  rows?: number;
  /** The id of a <datalist> of suggestions. */
  list?: string;
}

export function field(options: FieldOptions): HTMLDivElement {
  const id = uniqueId(`field-${options.name}`);
  const hintId = options.hint ? `${id}-hint` : undefined;
  const errorId = `${id}-error`;
  const described = [hintId, errorId].filter(Boolean).join(" ");
  const control = options.choices
    ? h(
        "select",
        { id, name: options.name, "aria-describedby": described },
        ...options.choices.map((c) => h("option", { value: c.value, selected: c.value === options.value }, c.label)),
      )
    : options.rows
      ? h(
          "textarea",
          {
            id,
            name: options.name,
            rows: options.rows,
            required: options.required,
            maxlength: options.maxlength,
            placeholder: options.placeholder,
            spellcheck: "false",
            "aria-describedby": described,
          },
          options.value ?? "",
        )
      : h("input", {
          id,
          name: options.name,
          type: options.type ?? "text",
          value: options.value,
          required: options.required,
          autocomplete: options.autocomplete ?? "off",
          minlength: options.minlength,
          maxlength: options.maxlength,
          placeholder: options.placeholder,
          list: options.list,
          spellcheck: options.type === "password" ? undefined : "false",
          "aria-describedby": described,
        });
  return h(
    "div",
    { class: "field", "data-field": options.name },
    h("label", { for: id }, options.label),
    control,
    hintId ? h("p", { class: "hint", id: hintId }, options.hint) : null,
    h("p", { class: "field-error", id: errorId, hidden: true }),
  );
}

/** The trimmed value of a named control. */
export function value(form: HTMLFormElement, name: string): string {
  const control = form.elements.namedItem(name);
  return control instanceof HTMLInputElement || control instanceof HTMLSelectElement || control instanceof HTMLTextAreaElement
    ? control.value.trim()
    : "";
}

/** "berlin, lab , berlin" → ["berlin", "lab"] */
export function splitList(text: string): string[] {
  return [
    ...new Set(
      text
        .split(",")
        .map((s) => s.trim())
        .filter((s) => s.length > 0),
    ),
  ];
}

/** A server message as a sentence: capitalised, with a full stop. */
export function sentence(message: string): string {
  const text = message.trim();
  if (!text) return text;
  const capital = text[0]!.toUpperCase() + text.slice(1);
  return /[.!?]$/.test(capital) ? capital : `${capital}.`;
}

export function describeError(error: unknown): string {
  if (error instanceof ApiError) return sentence(error.message);
  return `Something went wrong: ${error instanceof Error ? error.message : String(error)}`;
}

export function clearErrors(form: HTMLFormElement): void {
  for (const p of form.querySelectorAll<HTMLElement>(".field-error")) {
    p.hidden = true;
    p.textContent = "";
  }
  for (const c of form.querySelectorAll("[aria-invalid]")) c.removeAttribute("aria-invalid");
  const formError = form.querySelector<HTMLElement>(".form-error");
  if (formError) {
    formError.hidden = true;
    formError.textContent = "";
  }
}

/**
 * Shows `error` next to the field the server named (`allowed_groups.2` → the `allowed_groups`
 * control) and focuses it; otherwise at the top of the form.
 */
export function showError(form: HTMLFormElement, error: unknown): void {
  clearErrors(form);
  if (error instanceof ApiError && error.field) {
    const name = error.field.split(/[.[]/)[0]!;
    const wrapper = form.querySelector<HTMLElement>(`.field[data-field="${CSS.escape(name)}"]`);
    const control = wrapper?.querySelector<HTMLElement>("input, select, textarea");
    const slot = wrapper?.querySelector<HTMLElement>(".field-error");
    if (control && slot) {
      const prefix = `${error.field}: `;
      slot.textContent = sentence(error.message.startsWith(prefix) ? error.message.slice(prefix.length) : error.message);
      slot.hidden = false;
      control.setAttribute("aria-invalid", "true");
      control.focus();
      return;
    }
  }
  let formError = form.querySelector<HTMLElement>(".form-error");
  if (!formError) {
    formError = h("p", { class: "form-error", role: "alert" });
    form.prepend(formError);
  }
  formError.textContent = describeError(error);
  formError.hidden = false;
}
