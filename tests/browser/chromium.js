// The browser every browser test drives: Debian's chromium (installed by
// scripts/test), headless, through playwright-core.

import { chromium } from "playwright-core";

const ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--no-first-run",
  "--disable-sync",
];

/** Launches a headless Chromium; the caller closes it. */
export function launchChromium() {
  return chromium.launch({ executablePath: "/usr/bin/chromium", headless: true, args: ARGS });
}
