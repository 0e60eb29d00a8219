// `node --import ./register.mjs …`: records every module the program loads (see hooks.mjs).
import { register } from 'node:module';

register('./hooks.mjs', import.meta.url);
