// Vite's `?raw` imports (tests read committed text files: docs, generated SQL).
declare module "*?raw" {
  const content: string;
  export default content;
}
